//! Typed views of the deployment files: deploy/docker-compose.yml, the rendered Kubernetes objects and
//! kind's cluster config, with the fields the checks read (anything else in the files is ignored here;
//! the Compose schema and kustomize judge the rest). A check that reads `service.healthcheck` cannot
//! misspell a key the way a walk through untyped JSON can, and a file that changes shape fails to parse
//! instead of reading as empty.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

// ---- compose --------------------------------------------------------------------------------------------

/// deploy/docker-compose.yml after compose's interpolation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Compose {
    pub name: String,
    pub services: BTreeMap<String, Service>,
}

impl Compose {
    /// A service by name; panics when there is none (the checks name the services the file has).
    pub fn service(&self, name: &str) -> &Service {
        self.services
            .get(name)
            .unwrap_or_else(|| panic!("no compose service {name}"))
    }

    pub fn service_mut(&mut self, name: &str) -> &mut Service {
        self.services
            .get_mut(name)
            .unwrap_or_else(|| panic!("no compose service {name}"))
    }
}

/// One compose service.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Service {
    pub image: String,
    pub build: Option<Build>,
    #[serde(deserialize_with = "words")]
    pub command: Vec<String>,
    #[serde(deserialize_with = "scalar_map")]
    pub environment: BTreeMap<String, String>,
    pub ports: Vec<String>,
    pub volumes: Vec<String>,
    pub healthcheck: Option<Healthcheck>,
    pub depends_on: BTreeMap<String, DependsOn>,
    pub restart: Option<String>,
    pub profiles: Vec<String>,
    pub mem_limit: Option<String>,
}

impl Service {
    /// A one-shot service: it runs to completion and is not restarted.
    pub fn one_shot(&self) -> bool {
        self.restart.as_deref() == Some("no")
    }

    /// The health check's command, empty without one.
    pub fn health_test(&self) -> &[String] {
        self.healthcheck.as_ref().map_or(&[], |h| &h.test)
    }

    /// The Dockerfile target the service's image is built from.
    pub fn target(&self) -> Option<&str> {
        self.build.as_ref().and_then(|b| b.target.as_deref())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Build {
    pub context: String,
    pub dockerfile: String,
    pub target: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Healthcheck {
    #[serde(deserialize_with = "words")]
    pub test: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct DependsOn {
    pub condition: String,
}

// ---- Kubernetes -----------------------------------------------------------------------------------------

/// One rendered Kubernetes object, by kind; the kinds the checks do not read are `Other`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind")]
pub enum Object {
    Deployment(Workload),
    StatefulSet(Workload),
    Job(Workload),
    Service(KubeService),
    ConfigMap(Data),
    Secret(Data),
    #[serde(other)]
    Other,
}

impl Object {
    /// A workload (Deployment, StatefulSet or Job) with its kind.
    pub fn workload(&self) -> Option<(&'static str, &Workload)> {
        match self {
            Object::Deployment(w) => Some(("Deployment", w)),
            Object::StatefulSet(w) => Some(("StatefulSet", w)),
            Object::Job(w) => Some(("Job", w)),
            _ => None,
        }
    }

    pub fn workload_mut(&mut self) -> Option<&mut Workload> {
        match self {
            Object::Deployment(w) | Object::StatefulSet(w) | Object::Job(w) => Some(w),
            _ => None,
        }
    }
}

/// The workloads of a rendering, with their kinds.
pub fn workloads(objs: &[Object]) -> impl Iterator<Item = (&'static str, &Workload)> {
    objs.iter().filter_map(Object::workload)
}

pub fn workload_mut<'a>(objs: &'a mut [Object], kind: &str, name: &str) -> &'a mut Workload {
    objs.iter_mut()
        .filter(|o| o.workload().is_some_and(|(k, _)| k == kind))
        .filter_map(Object::workload_mut)
        .find(|w| w.metadata.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The Services of a rendering.
pub fn services(objs: &[Object]) -> impl Iterator<Item = &KubeService> {
    objs.iter().filter_map(|o| match o {
        Object::Service(s) => Some(s),
        _ => None,
    })
}

pub fn service_mut<'a>(objs: &'a mut [Object], name: &str) -> &'a mut KubeService {
    objs.iter_mut()
        .find_map(|o| match o {
            Object::Service(s) if s.metadata.name == name => Some(s),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Service {name}"))
}

/// A generated ConfigMap, found by the name before kustomize's hash suffix.
pub fn generated_config_map<'a>(objs: &'a [Object], base: &str) -> Option<&'a Data> {
    objs.iter().find_map(|o| match o {
        Object::ConfigMap(d) if generated_name(&d.metadata.name, base) => Some(d),
        _ => None,
    })
}

pub fn generated_config_map_mut<'a>(objs: &'a mut [Object], base: &str) -> &'a mut Data {
    objs.iter_mut()
        .find_map(|o| match o {
            Object::ConfigMap(d) if generated_name(&d.metadata.name, base) => Some(d),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no generated ConfigMap {base}"))
}

/// `base` itself, or `base-` and kustomize's ten-character hash.
fn generated_name(name: &str, base: &str) -> bool {
    name.strip_prefix(base)
        .is_some_and(|suffix| suffix.is_empty() || (suffix.starts_with('-') && suffix.len() == 11))
}

/// A Secret by name.
pub fn secret<'a>(objs: &'a [Object], name: &str) -> Option<&'a Data> {
    objs.iter().find_map(|o| match o {
        Object::Secret(d) if d.metadata.name == name => Some(d),
        _ => None,
    })
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Metadata {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A Deployment, StatefulSet or Job.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Workload {
    pub metadata: Metadata,
    pub spec: WorkloadSpec,
}

impl Workload {
    /// The first container (each of ours has one).
    pub fn container(&self) -> &Container {
        &self.spec.template.spec.containers[0]
    }

    pub fn container_mut(&mut self) -> &mut Container {
        &mut self.spec.template.spec.containers[0]
    }

    /// The pod's `app.kubernetes.io/name` label, which the Services select on.
    pub fn app_label(&self) -> Option<&str> {
        self.spec
            .template
            .metadata
            .labels
            .get("app.kubernetes.io/name")
            .map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WorkloadSpec {
    pub template: PodTemplate,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PodTemplate {
    #[serde(default)]
    pub metadata: Metadata,
    pub spec: PodSpec,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PodSpec {
    pub containers: Vec<Container>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    pub image: String,
    #[serde(deserialize_with = "words")]
    pub command: Vec<String>,
    #[serde(deserialize_with = "words")]
    pub args: Vec<String>,
    pub env: Vec<EnvVar>,
    pub ports: Vec<ContainerPort>,
    pub readiness_probe: Option<Probe>,
    pub liveness_probe: Option<Probe>,
    pub resources: Resources,
    pub volume_mounts: Vec<VolumeMount>,
}

impl Container {
    /// A probe's or Service's port: a number, or the name of one of the container's ports.
    pub fn port(&self, port: &PortRef) -> Option<u16> {
        match port {
            PortRef::Number(n) => Some(*n),
            PortRef::Name(name) => self
                .ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.container_port),
        }
    }

    /// The probe of that name (`readinessProbe`, `livenessProbe`).
    pub fn probe(&self, which: &str) -> Option<&Probe> {
        match which {
            "readinessProbe" => self.readiness_probe.as_ref(),
            "livenessProbe" => self.liveness_probe.as_ref(),
            other => panic!("no probe {other}"),
        }
    }

    pub fn set_env(&mut self, name: &str, value: &str) {
        let var = self
            .env
            .iter_mut()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no variable {name}"));
        var.value = Some(value.to_owned());
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(deserialize_with = "optional_scalar")]
    pub value: Option<String>,
    pub value_from: Option<EnvSource>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EnvSource {
    pub secret_key_ref: Option<KeyRef>,
    pub field_ref: Option<FieldRef>,
}

/// The downward API: a field of the pod (`metadata.name`, the replica's stable name).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldRef {
    pub field_path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct KeyRef {
    pub name: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default)]
    pub name: Option<String>,
    pub container_port: u16,
}

/// A port given by number or by the name of a container port.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(name) => write!(f, "{name:?}"),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Probe {
    pub http_get: Option<HttpGet>,
    pub tcp_socket: Option<TcpSocket>,
    pub exec: Option<Exec>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HttpGet {
    #[serde(default)]
    pub path: Option<String>,
    pub port: PortRef,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TcpSocket {
    pub port: PortRef,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Exec {
    #[serde(deserialize_with = "words")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Resources {
    #[serde(deserialize_with = "scalar_map")]
    pub requests: BTreeMap<String, String>,
    #[serde(deserialize_with = "scalar_map")]
    pub limits: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    pub config_map: Option<ConfigMapRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ConfigMapRef {
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
}

/// A Kubernetes Service.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct KubeService {
    pub metadata: Metadata,
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ServiceSpec {
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    pub port: u16,
    #[serde(default)]
    pub target_port: Option<PortRef>,
    #[serde(default)]
    pub node_port: Option<u16>,
}

/// A ConfigMap or Secret (Secret values base64-encoded, as rendered).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Data {
    pub metadata: Metadata,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

// ---- kind -----------------------------------------------------------------------------------------------

/// deploy/kind/kind-config.yaml.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct KindCluster {
    pub nodes: Vec<KindNode>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KindNode {
    pub image: String,
    #[serde(default)]
    pub extra_port_mappings: Vec<PortMapping>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub container_port: u16,
    pub host_port: u16,
    #[serde(default)]
    pub listen_address: Option<String>,
}

// ---- scalars --------------------------------------------------------------------------------------------

/// A YAML scalar as the string a container sees (`"1"`, `1` and `true` alike).
fn scalar_string(v: serde_yaml_ng::Value) -> Result<String, String> {
    match v {
        serde_yaml_ng::Value::String(s) => Ok(s),
        serde_yaml_ng::Value::Number(n) => Ok(n.to_string()),
        serde_yaml_ng::Value::Bool(b) => Ok(b.to_string()),
        serde_yaml_ng::Value::Null => Ok(String::new()),
        other => Err(format!("not a scalar: {other:?}")),
    }
}

fn scalar_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, serde_yaml_ng::Value>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| Ok((k, scalar_string(v).map_err(serde::de::Error::custom)?)))
        .collect()
}

fn optional_scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let raw = Option::<serde_yaml_ng::Value>::deserialize(d)?;
    raw.map(|v| scalar_string(v).map_err(serde::de::Error::custom))
        .transpose()
}

/// A command as compose and Kubernetes take it: a list, or one string split on white space.
fn words<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match Option::<serde_yaml_ng::Value>::deserialize(d)? {
        None => Ok(vec![]),
        Some(serde_yaml_ng::Value::String(s)) => Ok(s.split_whitespace().map(str::to_owned).collect()),
        Some(serde_yaml_ng::Value::Sequence(items)) => items
            .into_iter()
            .map(|v| scalar_string(v).map_err(serde::de::Error::custom))
            .collect(),
        Some(other) => Err(serde::de::Error::custom(format!("not a command: {other:?}"))),
    }
}
