//! The Collector and Jaeger configs compose and Kubernetes mount are valid for the binaries that run
//! them, with the environment each deployment gives those containers.
//!
//! The binaries are the native stack's: the Collector built from otel-collector/builder-config.yaml
//! (the same version and a subset of the components of the contrib image compose pins) and Jaeger
//! v2.12.0 (the version of the image compose pins). `validate` builds every component from the config
//! without starting it, so a wrong value (a size that is not a number, a spike limit above the limit, an undefined exporter)
//! fails here, not in a container nobody can start on these machines. (It does not check
//! listen addresses; tests/consistency.rs does, against every port something listens on.)

mod support;

use std::collections::BTreeMap;

use support::*;

fn compose_collector_env() -> BTreeMap<String, String> {
    compose_file().service("otel-collector").environment.clone()
}

fn k8s_env(name: &str) -> BTreeMap<String, String> {
    let objs = kind_typed_objects();
    let d = model::workloads(&objs)
        .find(|(kind, w)| *kind == "Deployment" && w.metadata.name == name)
        .map(|(_, w)| w)
        .unwrap_or_else(|| panic!("no Deployment {name}"));
    container_env(&objs, d.container())
}

#[test]
fn the_collector_validates_the_config_with_the_compose_and_kubernetes_environments() {
    let config = root().join("otel-collector/config.yaml");
    let bin = otelcol_bin();
    for (deployment, env) in [
        ("compose", compose_collector_env()),
        ("kubernetes", k8s_env("otel-collector")),
    ] {
        assert!(
            env.contains_key("JAEGER_OTLP_ENDPOINT"),
            "{deployment} sets Jaeger's address: {env:?}"
        );
        if let Err(e) = validate(&bin, &config, &env) {
            panic!("{deployment} env {env:?}: {e}");
        }
    }
}

#[test]
fn the_collector_rejects_a_broken_config_and_a_broken_environment() {
    let bin = otelcol_bin();
    let good = read("otel-collector/config.yaml");
    let dir = scratch("otelcol");
    let broken = good.replace("exporters: [prometheus]", "exporters: [prometheus, nowhere]");
    assert_ne!(broken, good, "the metrics pipeline's exporters line must exist");
    let path = dir.join("config.yaml");
    std::fs::write(&path, broken).unwrap();
    assert!(
        validate(&bin, &path, &compose_collector_env()).is_err(),
        "an undefined exporter was accepted"
    );
    // The same file with an environment that makes it invalid: the environment is really applied.
    let mut env = compose_collector_env();
    env.insert("OTELCOL_MEMORY_LIMIT_MIB".into(), "40".into());
    env.insert("OTELCOL_MEMORY_SPIKE_MIB".into(), "50".into());
    let config = root().join("otel-collector/config.yaml");
    assert!(
        validate(&bin, &config, &env).is_err(),
        "a spike limit above the limit was accepted"
    );
    let mut env = compose_collector_env();
    env.insert("OTELCOL_MEMORY_LIMIT_MIB".into(), "plenty".into());
    assert!(
        validate(&bin, &config, &env).is_err(),
        "a limit that is not a number was accepted"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn jaeger_validates_its_config_with_the_compose_and_kubernetes_environments() {
    let config = root().join("deploy/jaeger/config.yaml");
    let bin = jaeger_bin();
    let compose_env = compose_file().service("jaeger").environment.clone();
    for (deployment, env) in [("compose", compose_env), ("kubernetes", k8s_env("jaeger"))] {
        if let Err(e) = validate(&bin, &config, &env) {
            panic!("{deployment} env {env:?}: {e}");
        }
    }
}

#[test]
fn jaeger_rejects_a_broken_config() {
    let bin = jaeger_bin();
    let good = read("deploy/jaeger/config.yaml");
    let dir = scratch("jaeger");
    for (name, broken) in [
        (
            "misspelt-option",
            good.replace("normalize_calls: true", "normalise_calls: true"),
        ),
        (
            "undefined-exporter",
            good.replace("exporters: [jaeger_storage_exporter]", "exporters: [nowhere]"),
        ),
    ] {
        assert_ne!(broken, good, "{name}: the replacement must change the config");
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, broken).unwrap();
        assert!(
            validate(&bin, &path, &BTreeMap::new()).is_err(),
            "{name} was accepted"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}
