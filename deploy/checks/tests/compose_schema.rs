//! deploy/docker-compose.yml is a valid Compose file: it validates against the Compose Specification's
//! JSON schema (the pinned copy next to this crate, see COMPOSE-SPEC.md) after compose's interpolation,
//! as `docker compose config` would check it on a machine with Docker.

mod support;

use serde_json::Value;
use support::*;

fn schema() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&read("deploy/checks/compose-spec.json")).unwrap();
    jsonschema::draft7::new(&schema).expect("the Compose schema compiles")
}

fn errors(validator: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    validator
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_compose_file_validates_against_the_compose_specification() {
    let errs = errors(&schema(), &compose());
    assert!(errs.is_empty(), "{errs:#?}");
}

#[test]
fn a_broken_compose_file_is_rejected() {
    let validator = schema();
    let good = compose();
    type Breakage = (&'static str, fn(&mut Value));
    let cases: [Breakage; 4] = [
        ("unknown service key", |c| {
            c["services"]["order"]["healthcheck"]["command"] = "x".into();
        }),
        ("depends_on condition misspelt", |c| {
            c["services"]["order"]["depends_on"]["kitchen"]["condition"] = "service_ready".into();
        }),
        ("ports not a list", |c| {
            c["services"]["order"]["ports"] = 8080.into()
        }),
        ("unknown top-level key", |c| c["service"] = serde_json::json!({})),
    ];
    for (name, breakage) in cases {
        let mut broken = good.clone();
        breakage(&mut broken);
        assert_ne!(broken, good, "{name}");
        assert!(!errors(&validator, &broken).is_empty(), "{name} was accepted");
    }
}
