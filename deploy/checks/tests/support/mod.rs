//! What the deployment checks share: the repository's files, compose's interpolation, kustomize
//! rendering, typed views of the deployment files ([`model`]), the native stack's binaries, and small
//! parsers for addresses and topic lists.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part of this module

pub mod model;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize as _;
use serde_json::Value;

use model::{Compose, Container, Object};

/// The checkout's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A fresh scratch directory under the system's temp dir.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pizza-deploy-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compose's variable interpolation with an empty environment: `${NAME:-default}` and
/// `${NAME-default}` become the default, `${NAME}` and `$NAME` become empty, `$$` is a literal `$`.
pub fn interpolate(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').expect("unclosed ${ in compose file");
            let expr = &body[..end];
            if let Some((_, default)) = expr.split_once(":-").or_else(|| expr.split_once('-')) {
                out.push_str(default);
            }
            rest = &body[end + 1..];
        } else {
            let n = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            rest = &after[n..];
        }
    }
    out.push_str(rest);
    out
}

/// YAML to JSON values (compose and Kubernetes objects are JSON-shaped).
pub fn yaml(text: &str) -> Result<Value, String> {
    serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
}

/// Every document of a multi-document YAML stream.
pub fn yaml_docs(text: &str) -> Result<Vec<Value>, String> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).map_err(|e| e.to_string()))
        .filter(|v| !matches!(v, Ok(Value::Null)))
        .collect()
}

/// deploy/docker-compose.yml as compose reads it (interpolated with an empty environment), untyped:
/// what the Compose Specification's schema validates.
pub fn compose() -> Value {
    yaml(&interpolate(&read("deploy/docker-compose.yml"))).unwrap()
}

/// deploy/docker-compose.yml as compose reads it, typed.
pub fn compose_file() -> Compose {
    serde_yaml_ng::from_str(&interpolate(&read("deploy/docker-compose.yml"))).unwrap()
}

/// The kustomize binary deploy/local/deploy-tools.sh built (or `PIZZA_KUSTOMIZE_BIN`).
pub fn kustomize_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PIZZA_KUSTOMIZE_BIN") {
        return bin.into();
    }
    let out = Command::new(root().join("deploy/local/deploy-tools.sh"))
        .args(["path", "kustomize"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kustomize is not built: run `deploy/local/deploy-tools.sh install` (make test does)"
    );
    String::from_utf8(out.stdout).unwrap().trim().into()
}

/// `kustomize build` of a folder, as deploy/kind/up.sh renders it.
pub fn render(dir: &Path) -> Result<String, String> {
    let out = Command::new(kustomize_bin())
        .args(["build", "--load-restrictor", "LoadRestrictionsNone"])
        .arg(dir)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The objects of a rendering, each checked to be a Kubernetes object: apiVersion, kind, metadata.name.
pub fn objects(rendered: &str) -> Result<Vec<Value>, String> {
    let docs = yaml_docs(rendered)?;
    for (i, d) in docs.iter().enumerate() {
        for field in ["/apiVersion", "/kind", "/metadata/name"] {
            if d.pointer(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(format!("document {i} has no {field}: {d}"));
            }
        }
    }
    Ok(docs)
}

/// The kind overlay, rendered and parsed.
pub fn kind_objects() -> Vec<Value> {
    objects(&render(&root().join("deploy/k8s/overlays/kind")).unwrap()).unwrap()
}

/// The kind overlay, rendered, as typed objects.
pub fn kind_typed_objects() -> Vec<Object> {
    kind_objects()
        .into_iter()
        .map(|o| serde_json::from_value(o).unwrap())
        .collect()
}

/// The Secrets (name, key) the manifests reference but do not render: they are made at deploy time
/// (deploy/kind/up.sh), so that no cluster runs with a credential published in this repository. Only
/// these may be missing from a rendering; any other missing Secret or key is an error.
pub const DEPLOY_TIME_SECRETS: &[(&str, &str)] = &[("admin-token", "PIZZA_ADMIN_TOKEN")];

/// The value [`container_env`] gives a variable read from a Secret made at deploy time: a stand-in
/// that names it, as for a field known only in the cluster.
pub fn deploy_time_value(secret: &str, key: &str) -> String {
    format!("<Secret {secret}/{key}, made at deploy time>")
}

/// A container's environment, with Secret references resolved from the rendered Secrets (and those
/// made at deploy time, [`DEPLOY_TIME_SECRETS`], given a stand-in unless a rendering has them).
pub fn container_env(objs: &[Object], c: &Container) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for e in &c.env {
        let name = e.name.clone();
        let value = if let Some(v) = &e.value {
            v.clone()
        } else if let Some(r) = e.value_from.as_ref().and_then(|f| f.secret_key_ref.as_ref()) {
            let secret = model::secret(objs, &r.name);
            if secret.is_none() && DEPLOY_TIME_SECRETS.contains(&(r.name.as_str(), r.key.as_str())) {
                env.insert(name, deploy_time_value(&r.name, &r.key));
                continue;
            }
            let secret = secret.unwrap_or_else(|| panic!("{name}: no Secret {}", r.name));
            let b64 = secret
                .data
                .get(&r.key)
                .unwrap_or_else(|| panic!("{name}: Secret {} has no key {}", r.name, r.key));
            use base64::Engine as _;
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap()
        } else if let Some(field) = e.value_from.as_ref().and_then(|f| f.field_ref.as_ref()) {
            let field = &field.field_path;
            // Known only in the cluster (the pod's name): a stand-in that names it.
            format!("<{field}>")
        } else {
            panic!("{name}: only value, secretKeyRef and fieldRef are used")
        };
        env.insert(name, value);
    }
    env
}

pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The Collector binary the native stack built (`PIZZA_OTELCOL_BIN`, else `infra.sh path collector`).
pub fn otelcol_bin() -> PathBuf {
    native_bin("PIZZA_OTELCOL_BIN", "collector")
}

/// The Jaeger binary the native stack built (`PIZZA_JAEGER_BIN`, else `infra.sh path jaeger`).
pub fn jaeger_bin() -> PathBuf {
    native_bin("PIZZA_JAEGER_BIN", "jaeger")
}

fn native_bin(var: &str, component: &str) -> PathBuf {
    if let Some(bin) = std::env::var_os(var) {
        return bin.into();
    }
    let out = Command::new(root().join("deploy/local/infra.sh"))
        .args(["path", component])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "no {component} built for this config yet: run `deploy/local/infra.sh install {component}` (or set {var})"
    );
    String::from_utf8(out.stdout).unwrap().trim().into()
}

/// `BIN validate --config FILE` with exactly `env` (nothing inherited), so the values a deployment
/// does not set fall back to the file's defaults, as in the container.
pub fn validate(bin: &Path, config: &Path, env: &BTreeMap<String, String>) -> Result<(), String> {
    let out = Command::new(bin)
        .arg("validate")
        .arg("--config")
        .arg(config)
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Resolves the Collector's `${env:NAME:-default}` references the way the Collector does.
pub fn resolve_env_refs(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${env:") {
        out.push_str(&rest[..i]);
        let body = &rest[i + 6..];
        let end = body.find('}').unwrap();
        let (name, default) = body[..end].split_once(":-").unwrap_or((&body[..end], ""));
        out.push_str(env.get(name).map(String::as_str).unwrap_or(default));
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The variable names a config file reads with `${env:NAME...}`.
pub fn env_refs(text: &str) -> BTreeSet<String> {
    text.match_indices("${env:")
        .map(|(i, _)| {
            let body = &text[i + 6..];
            let end = body.find([':', '}']).unwrap();
            body[..end].to_owned()
        })
        .collect()
}

/// Host and port of `scheme://[user@]host:port/...` or `host:port`; `None` without an explicit port.
pub fn host_port(s: &str) -> Option<(String, u16)> {
    let s = s.split_once("://").map_or(s, |(_, r)| r);
    let s = s.split(['/', ',']).next()?;
    let s = s.rsplit_once('@').map_or(s, |(_, r)| r);
    let (host, port) = s.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

/// `name partitions` lines of a topic list, comments and blank lines skipped; a line without a
/// partition count counts as 0 partitions, so a wrong file never equals the real list.
pub fn topics(text: &str) -> BTreeMap<String, u32> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next().unwrap_or_default().to_owned();
            (name, f.next().and_then(|p| p.parse().ok()).unwrap_or(0))
        })
        .collect()
}
