//! deploy/k8s/overlays/kind renders with kustomize (the library `kubectl kustomize` embeds), every
//! rendered document is a Kubernetes object, and a broken kustomization or object is caught.

mod support;

use support::*;

#[test]
fn the_kind_overlay_renders_into_named_kubernetes_objects() {
    let objs = kind_objects();
    let kinds: Vec<String> = objs
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        "Namespace/pizza",
        "StatefulSet/postgres",
        "StatefulSet/kafka",
        "Job/kafka-topics",
        "Deployment/otel-collector",
        "Deployment/jaeger",
        "Deployment/prometheus",
        "Deployment/order",
        "Deployment/kitchen",
        "Deployment/delivery",
    ] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "{expected} missing from {kinds:?}"
        );
    }
    // Everything but the namespace lives in it.
    for o in objs.iter().filter(|o| o["kind"] != "Namespace") {
        assert_eq!(o["metadata"]["namespace"], "pizza", "{}", o["metadata"]["name"]);
    }
}

#[test]
fn a_broken_kustomization_fails_to_render() {
    // A copy of deploy/k8s and the files it reads, laid out as in the repository, whose base names a
    // file that does not exist. The intact copy must render, so only the breakage differs.
    let scratch_root = scratch("k8s");
    let dir = &scratch_root;
    for rel in [
        "deploy/k8s/base",
        "deploy/k8s/overlays/kind",
        "deploy/jaeger",
        "deploy/prometheus",
        "deploy/kafka",
        "deploy/local/kafka",
        "otel-collector",
    ] {
        std::fs::create_dir_all(dir.join(rel)).unwrap();
        for entry in std::fs::read_dir(root().join(rel)).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), dir.join(rel).join(entry.file_name())).unwrap();
            }
        }
    }
    let dir = dir.join("deploy/k8s");
    let result_intact = render(&dir.join("overlays/kind"));
    let kustomization = dir.join("base/kustomization.yaml");
    let text = std::fs::read_to_string(&kustomization).unwrap();
    std::fs::write(
        &kustomization,
        text.replace("  - kafka.yaml\n", "  - kafka-missing.yaml\n"),
    )
    .unwrap();
    let result_broken = render(&dir.join("overlays/kind"));
    std::fs::remove_dir_all(&scratch_root).unwrap();
    assert!(
        result_intact.is_ok(),
        "the intact copy renders: {result_intact:?}"
    );
    assert!(result_broken.is_err(), "a missing resource rendered");
}

#[test]
fn a_document_that_is_not_a_named_object_is_refused() {
    let rendered = render(&root().join("deploy/k8s/overlays/kind")).unwrap();
    assert!(objects(&rendered).is_ok());
    let unnamed = rendered.replacen("  name: pizza\n", "  labels: {}\n", 1);
    assert_ne!(unnamed, rendered);
    assert!(
        objects(&unnamed).is_err(),
        "an object without metadata.name passed"
    );
    assert!(
        objects(&format!("{rendered}---\n: not yaml: [\n")).is_err(),
        "unparsable YAML passed"
    );
}
