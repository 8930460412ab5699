//! The attribute registry (`semconv/registry/pizza.yaml`, Weaver format) and the Rust constants in
//! `pizza_telemetry::attributes` describe the same set of names.

use std::collections::BTreeSet;

use pizza_telemetry::attributes::{pizza, semconv, workflow};
use pizza_testkit::conventions::Registry;

#[test]
fn every_project_attribute_constant_is_registered_and_every_registered_id_has_a_constant() {
    let registry = Registry::load().expect("semconv/registry parses");
    let constants: BTreeSet<String> = pizza::ALL
        .iter()
        .chain(workflow::ALL)
        .map(|s| s.to_string())
        .collect();
    let missing: Vec<_> = constants.difference(registry.ids()).collect();
    let extra: Vec<_> = registry.ids().difference(&constants).collect();
    assert!(missing.is_empty(), "constants not in the registry: {missing:?}");
    assert!(extra.is_empty(), "registry ids without a constant: {extra:?}");
}

#[test]
fn the_registry_only_holds_our_namespaces_and_never_redefines_a_semantic_convention() {
    let registry = Registry::load().unwrap();
    for id in registry.ids() {
        assert!(
            id.starts_with("pizza.") || id.starts_with("workflow."),
            "{id} is outside pizza.* and workflow.*"
        );
        assert!(
            !semconv::ALL.contains(&id.as_str()),
            "{id} is a semantic convention already"
        );
    }
}

#[test]
fn every_registered_attribute_is_documented_with_a_type_stability_and_brief() {
    let text = std::fs::read_to_string(pizza_testkit::Stack::repo_root().join("semconv/registry/pizza.yaml"))
        .unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let groups = doc["groups"].as_sequence().expect("groups");
    assert!(!groups.is_empty());
    for group in groups {
        assert_eq!(group["type"].as_str(), Some("attribute_group"));
        for attr in group["attributes"].as_sequence().expect("attributes") {
            let id = attr["id"].as_str().expect("id");
            for field in ["type", "stability", "brief"] {
                assert!(!attr[field].is_null(), "{id} has no {field}");
            }
        }
    }
}
