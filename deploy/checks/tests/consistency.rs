//! The deployments agree with the code and with each other.
//!
//! - every environment variable compose, the manifests and the Dockerfile set is one the receiving
//!   program reads (the services' names come from their `clap` commands and the telemetry crate's
//!   lookups, the Collector's and Jaeger's from their config files);
//! - every address one part gives another (`kafka:9092`, `http://kitchen:8081`, a scrape target, a
//!   health check, a probe, a published port) points at a port the other really listens on, on all
//!   interfaces where it is reached from outside, as derived from the same settings;
//! - every image tag is pinned, the same image has the same tag everywhere, and the versions match the
//!   native stack's;
//! - every long-running container has a health check (compose) or readiness and liveness probes and
//!   resource requests (Kubernetes);
//! - the topic-init steps create exactly deploy/local/kafka/topics.txt;
//! - no service reachable beyond loopback is given the workshop's published admin token or a short one
//!   (it would refuse to start: `pizza_servicekit::faults::admin_access`), and the manifests leave the
//!   token's Secret to deploy time instead of rendering one;
//! - compose's memory limits add up to less than the 1.5 GiB the README states.
//!
//! Each check returns the problems it found; every check is also run on a deliberately broken copy of
//! its input and must find the breakage. The compose file, the rendered manifests and kind's config are
//! read through typed views (`support::model`); the Collector's, Jaeger's and Prometheus' own configs,
//! which only a few pointers are read from, stay JSON values.

mod support;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use clap::CommandFactory as _;
use serde_json::Value;
use support::model::{
    Compose, Data, KindCluster, Metadata, Object, PortRef, generated_config_map, generated_config_map_mut,
    secret, service_mut, services, workload_mut, workloads,
};
use support::*;

/// The README's footprint statement for the default profile: 1.5 GiB.
const FOOTPRINT_MIB: u64 = 1536;

/// Variables the images themselves read (not our programs): the Go runtime's memory limit, and the
/// heap size Kafka's scripts pass to the JVM.
const IMAGE_RUNTIME_VARS: &[&str] = &["GOMEMLIMIT", "KAFKA_HEAP_OPTS"];

/// A named change that breaks an input (the negative cases).
type Breakage = (&'static str, fn(&mut Inputs));
type BoxedBreakage = (&'static str, Box<dyn Fn(&mut Inputs)>);

/// Everything the checks read, so a broken copy can be made of any part.
#[derive(Clone)]
struct Inputs {
    compose: Compose,
    objs: Vec<Object>,
    dockerfile: String,
    kind: KindCluster,
}

fn inputs() -> Inputs {
    Inputs {
        compose: compose_file(),
        objs: kind_typed_objects(),
        dockerfile: read("deploy/Dockerfile"),
        kind: serde_yaml_ng::from_str(&read("deploy/kind/kind-config.yaml")).unwrap(),
    }
}

// ---- what the programs read ---------------------------------------------------------------------------

fn clap_env(cmd: &clap::Command) -> BTreeSet<String> {
    cmd.get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// Every variable `pizza_telemetry::TelemetryArgs` looks up, recorded from the real lookups.
fn telemetry_env() -> BTreeSet<String> {
    let seen = RefCell::new(BTreeSet::new());
    pizza_telemetry::TelemetryArgs::from_lookup(|k| {
        seen.borrow_mut().insert(k.to_owned());
        None
    })
    .unwrap();
    seen.into_inner()
}

fn service_command(name: &str) -> Option<clap::Command> {
    match name {
        "order" => Some(pizza_order::Config::command()),
        "kitchen" => Some(pizza_kitchen::Config::command()),
        "delivery" => Some(pizza_delivery::Config::command()),
        _ => None,
    }
}

/// The variables a container's program reads, by what runs in it; `None` for third-party images whose
/// variables are the image's own convention (PostgreSQL, Kafka).
fn readable_env(unit: &str, image: &str) -> Option<BTreeSet<String>> {
    let mut names: BTreeSet<String> = IMAGE_RUNTIME_VARS.iter().map(|s| s.to_string()).collect();
    if let Some(cmd) = service_command(unit) {
        names.extend(clap_env(&cmd));
        names.extend(telemetry_env());
    } else if image.starts_with("otel/opentelemetry-collector") {
        names.extend(env_refs(&read("otel-collector/config.yaml")));
    } else if image.starts_with("jaegertracing/") {
        names.extend(env_refs(&read("deploy/jaeger/config.yaml")));
    } else if unit == "kafka-init" || unit == "kafka-topics" {
        let script = read("deploy/kafka/create-topics.sh");
        names.extend(
            script
                .match_indices("${")
                .map(|(i, _)| script[i + 2..].split([':', '}']).next().unwrap().to_owned()),
        );
    } else {
        return None;
    }
    Some(names)
}

/// The default listen address of a service, from its `clap` command.
fn default_addr(unit: &str) -> Option<String> {
    let cmd = service_command(unit)?;
    let var = format!("PIZZA_{}_ADDR", unit.to_uppercase());
    let arg = cmd
        .get_arguments()
        .find(|a| a.get_env().is_some_and(|e| e == var.as_str()))?;
    Some(arg.get_default_values()[0].to_string_lossy().into_owned())
}

/// One stage of a Dockerfile: what it is built `FROM`, its `ENV` lines, whether it sets an `ENTRYPOINT`.
struct Stage {
    from: String,
    env: BTreeMap<String, String>,
    entrypoint: bool,
}

/// The stages of a Dockerfile by name.
fn stages(dockerfile: &str) -> BTreeMap<String, Stage> {
    let mut stages: BTreeMap<String, Stage> = BTreeMap::new();
    let mut current = String::new();
    for line in dockerfile.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("FROM ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            current = words.last().unwrap().to_string();
            let stage = Stage {
                from: words[0].to_owned(),
                env: BTreeMap::new(),
                entrypoint: false,
            };
            stages.insert(current.clone(), stage);
        } else if let Some(rest) = line.strip_prefix("ENV ") {
            for pair in rest.split_whitespace() {
                let (k, v) = pair.split_once('=').unwrap();
                stages
                    .get_mut(&current)
                    .unwrap()
                    .env
                    .insert(k.to_owned(), v.to_owned());
            }
        } else if line.starts_with("ENTRYPOINT ") {
            stages.get_mut(&current).unwrap().entrypoint = true;
        }
    }
    stages
}

/// A target and the stages it is built `FROM`, the target first.
fn chain<'a>(stages: &'a BTreeMap<String, Stage>, target: &str) -> Vec<&'a Stage> {
    let mut chain = vec![];
    let mut at = target;
    loop {
        let stage = stages
            .get(at)
            .unwrap_or_else(|| panic!("no Dockerfile stage {at}"));
        chain.push(stage);
        if !stages.contains_key(&stage.from) {
            return chain;
        }
        at = &stage.from;
    }
}

/// `ENV` lines of a Dockerfile stage and of the stages it is built `FROM`.
fn dockerfile_env(dockerfile: &str, target: &str) -> BTreeMap<String, String> {
    let stages = stages(dockerfile);
    chain(&stages, target)
        .into_iter()
        .rev()
        .flat_map(|s| s.env.clone())
        .collect()
}

/// The image whose program a compose service runs. A Dockerfile target with an `ENTRYPOINT` of its own
/// runs our program (`pizza/order`); a target that only adds files to an upstream image (the
/// Collector's, plus the health check's probe) runs that image's program.
fn program_image(dockerfile: &str, target: Option<&str>, image: &str) -> String {
    let Some(target) = target else {
        return image.to_owned();
    };
    let stages = stages(dockerfile);
    let chain = chain(&stages, target);
    if chain.iter().any(|s| s.entrypoint) {
        image.to_owned()
    } else {
        chain.last().unwrap().from.clone()
    }
}

// ---- one model of both deployments --------------------------------------------------------------------

/// One container as the checks see it, in compose or Kubernetes.
#[derive(Debug, Default)]
struct Unit {
    name: String,
    image: String,
    env: BTreeMap<String, String>,
    /// Port → the host it binds to.
    listens: BTreeMap<u16, String>,
    /// (what, address) this container connects to.
    refs: Vec<(String, String)>,
    /// (what, port) its health check or probes call inside the container.
    health: Vec<(String, u16)>,
}

fn endpoint_port(endpoint: &str) -> (String, u16) {
    host_port(endpoint).unwrap_or_else(|| panic!("no host:port in {endpoint:?}"))
}

/// Where the container's program listens and what it connects to, from the same settings the
/// container gets.
fn derive(unit: &mut Unit, args: &[String]) {
    let env = &unit.env;
    let image = unit.image.clone();
    if image.starts_with("pizza/") {
        let addr_var = format!("PIZZA_{}_ADDR", unit.name.to_uppercase());
        if let Some(addr) = env.get(&addr_var).cloned().or_else(|| default_addr(&unit.name)) {
            let (h, p) = endpoint_port(&addr);
            unit.listens.insert(p, h);
        }
        for (k, v) in env {
            if (k.ends_with("_URL") || k.ends_with("_ENDPOINT") || k.ends_with("_BOOTSTRAP"))
                && k != "PIZZA_JAEGER_UI_URL"
            {
                unit.refs.push((k.clone(), v.clone()));
            }
        }
        if let Some(i) = args.iter().position(|a| a == "--target") {
            unit.refs.push(("--target".into(), args[i + 1].clone()));
        }
    } else if image.starts_with("otel/opentelemetry-collector") {
        let config = yaml(&resolve_env_refs(&read("otel-collector/config.yaml"), env)).unwrap();
        for ptr in [
            "/receivers/otlp/protocols/grpc/endpoint",
            "/receivers/otlp/protocols/http/endpoint",
            "/extensions/health_check/endpoint",
            "/exporters/prometheus/endpoint",
        ] {
            let (h, p) = endpoint_port(config.pointer(ptr).and_then(Value::as_str).unwrap());
            unit.listens.insert(p, h);
        }
        let jaeger = config.pointer("/exporters/otlp_grpc~1jaeger/endpoint").unwrap();
        unit.refs.push(("otlp_grpc/jaeger".into(), scalar(jaeger)));
    } else if image.starts_with("jaegertracing/") {
        let config = yaml(&resolve_env_refs(&read("deploy/jaeger/config.yaml"), env)).unwrap();
        for ptr in [
            "/receivers/otlp/protocols/grpc/endpoint",
            "/receivers/otlp/protocols/http/endpoint",
            "/extensions/jaeger_query/http/endpoint",
            "/extensions/jaeger_query/grpc/endpoint",
            "/extensions/healthcheckv2/http/endpoint",
        ] {
            let (h, p) = endpoint_port(config.pointer(ptr).and_then(Value::as_str).unwrap());
            unit.listens.insert(p, h);
        }
        let prom =
            config.pointer("/extensions/jaeger_storage/metric_backends/prometheus/prometheus/endpoint");
        unit.refs
            .push(("metric_backends.prometheus".into(), scalar(prom.unwrap())));
    } else if image.starts_with("apache/kafka") {
        if let Some(listeners) = env.get("KAFKA_LISTENERS") {
            for l in listeners.split(',') {
                let (h, p) = endpoint_port(l);
                unit.listens.insert(p, h);
            }
            let adv = env
                .get("KAFKA_ADVERTISED_LISTENERS")
                .expect("advertised listeners");
            unit.refs.push(("KAFKA_ADVERTISED_LISTENERS".into(), adv.clone()));
        }
        if let Some(b) = env.get("KAFKA_BOOTSTRAP") {
            unit.refs.push(("KAFKA_BOOTSTRAP".into(), b.clone()));
        }
    } else if image.starts_with("postgres:") {
        unit.listens.insert(5432, "0.0.0.0".into());
    } else if image.starts_with("prom/prometheus") {
        let addr = args
            .iter()
            .find_map(|a| a.strip_prefix("--web.listen-address="))
            .unwrap_or("0.0.0.0:9090");
        let (h, p) = endpoint_port(addr);
        unit.listens.insert(p, h);
        let prom = yaml(&read("deploy/prometheus/prometheus.yml")).unwrap();
        for job in prom["scrape_configs"].as_array().unwrap() {
            for sc in job["static_configs"].as_array().unwrap() {
                for t in sc["targets"].as_array().unwrap() {
                    unit.refs.push((format!("scrape {}", job["job_name"]), scalar(t)));
                }
            }
        }
    }
}

/// The ports a compose health check calls: `127.0.0.1:PORT`, `/dev/tcp/127.0.0.1/PORT`, `-p PORT`.
fn health_ports(test: &[String]) -> Vec<u16> {
    let joined = test.join(" ");
    let mut ports = vec![];
    for marker in ["127.0.0.1:", "127.0.0.1/"] {
        for (i, _) in joined.match_indices(marker) {
            let digits: String = joined[i + marker.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            ports.push(digits.parse().unwrap());
        }
    }
    if let Some(i) = test.iter().position(|a| a == "-p") {
        ports.push(test[i + 1].parse().unwrap());
    }
    ports
}

fn compose_units(inp: &Inputs) -> Vec<Unit> {
    let mut units = vec![];
    for (name, svc) in &inp.compose.services {
        let mut env = match svc.target() {
            Some(target) => dockerfile_env(&inp.dockerfile, target),
            None => BTreeMap::new(),
        };
        env.extend(svc.environment.clone());
        let mut unit = Unit {
            name: name.clone(),
            image: program_image(&inp.dockerfile, svc.target(), &svc.image),
            env,
            ..Unit::default()
        };
        unit.health = health_ports(svc.health_test())
            .into_iter()
            .map(|p| ("healthcheck".into(), p))
            .collect();
        derive(&mut unit, &svc.command);
        units.push(unit);
    }
    units
}

fn k8s_units(inp: &Inputs) -> Vec<Unit> {
    let mut units = vec![];
    for (_, w) in workloads(&inp.objs) {
        let c = w.container();
        let mut env = match c.image.strip_prefix("pizza/") {
            Some(rest) => dockerfile_env(&inp.dockerfile, rest.split(':').next().unwrap()),
            None => BTreeMap::new(),
        };
        env.extend(container_env(&inp.objs, c));
        let mut unit = Unit {
            name: w.metadata.name.clone(),
            image: c.image.clone(),
            env,
            ..Unit::default()
        };
        for probe in ["readinessProbe", "livenessProbe"] {
            let Some(p) = c.probe(probe) else { continue };
            let port = p
                .http_get
                .as_ref()
                .map(|h| &h.port)
                .or_else(|| p.tcp_socket.as_ref().map(|t| &t.port));
            if let Some(port) = port {
                let n = c
                    .port(port)
                    .unwrap_or_else(|| panic!("{}: {probe} port {port}", unit.name));
                unit.health.push((probe.into(), n));
            } else if let Some(exec) = &p.exec {
                for n in health_ports(&exec.command) {
                    unit.health.push((probe.into(), n));
                }
            }
        }
        let args: Vec<String> = c.args.iter().chain(&c.command).cloned().collect();
        derive(&mut unit, &args);
        units.push(unit);
    }
    units
}

fn reachable(host: &str) -> bool {
    host == "0.0.0.0" || host.is_empty() || host == "::"
}

/// Every address resolves to a port its target listens on, reachable from other containers; every
/// health check calls a port its own container listens on.
fn address_problems(
    units: &[Unit],
    resolve: impl Fn(&str, u16) -> Result<(String, u16), String>,
) -> Vec<String> {
    let mut problems = vec![];
    for u in units {
        for (what, port) in &u.health {
            if !u.listens.contains_key(port) {
                problems.push(format!(
                    "{}: {what} calls port {port}, it listens on {:?}",
                    u.name, u.listens
                ));
            }
        }
        for (what, addr) in &u.refs {
            for one in addr.split(',') {
                let Some((host, port)) = host_port(one) else {
                    problems.push(format!("{}: {what}={addr:?} names no port", u.name));
                    continue;
                };
                match resolve(&host, port) {
                    Err(e) => problems.push(format!("{}: {what}={addr}: {e}", u.name)),
                    Ok((target, tport)) => match units.iter().find(|t| t.name == target) {
                        None => problems.push(format!("{}: {what}={addr}: nothing runs as {target}", u.name)),
                        Some(t) => match t.listens.get(&tport) {
                            Some(h) if reachable(h) => {}
                            Some(h) => problems.push(format!(
                                "{}: {what}={addr}: {target} listens on {h}:{tport}, unreachable from other containers",
                                u.name
                            )),
                            None => problems.push(format!(
                                "{}: {what}={addr}: {target} does not listen on {tport} ({:?})",
                                u.name, t.listens
                            )),
                        },
                    },
                }
            }
        }
    }
    problems
}

fn compose_address_problems(inp: &Inputs) -> Vec<String> {
    let units = compose_units(inp);
    let names: BTreeSet<String> = units.iter().map(|u| u.name.clone()).collect();
    let mut problems = address_problems(&units, |host, port| {
        if names.contains(host) {
            Ok((host.to_owned(), port))
        } else {
            Err(format!("no compose service {host}"))
        }
    });
    // Published ports: the container side is listened on, and the shop and Jaeger are on the host.
    let mut published = BTreeMap::new();
    for u in &units {
        for p in &inp.compose.service(&u.name).ports {
            let parts: Vec<&str> = p.split(':').collect();
            let (host_port, container_port): (u16, u16) = (
                parts[parts.len() - 2].parse().unwrap(),
                parts[parts.len() - 1].parse().unwrap(),
            );
            if !u.listens.get(&container_port).is_some_and(|h| reachable(h)) {
                problems.push(format!("{}: publishes {p}, listens on {:?}", u.name, u.listens));
            }
            published.insert((u.name.clone(), container_port), host_port);
        }
    }
    let jaeger_ui = units.iter().find(|u| u.name == "jaeger").map(|j| {
        let cfg = yaml(&resolve_env_refs(&read("deploy/jaeger/config.yaml"), &j.env)).unwrap();
        endpoint_port(
            cfg.pointer("/extensions/jaeger_query/http/endpoint")
                .unwrap()
                .as_str()
                .unwrap(),
        )
        .1
    });
    for (svc, port, host) in [("order", 8080, 8080), ("jaeger", jaeger_ui.unwrap_or(0), 16686)] {
        if published.get(&(svc.to_owned(), port)) != Some(&host) {
            problems.push(format!(
                "{svc}'s port {port} is not published on localhost:{host}"
            ));
        }
    }
    problems.extend(jaeger_ui_link_problems(&units, "localhost", 16686));
    problems
}

/// The trace links the order service shows point at the Jaeger UI as the browser reaches it.
fn jaeger_ui_link_problems(units: &[Unit], host: &str, port: u16) -> Vec<String> {
    let order = units
        .iter()
        .find(|u| u.name == "order")
        .expect("an order service");
    let link = order.env.get("PIZZA_JAEGER_UI_URL").cloned().unwrap_or_default();
    if host_port(&link) == Some((host.to_owned(), port)) {
        vec![]
    } else {
        vec![format!(
            "order: PIZZA_JAEGER_UI_URL={link:?}, Jaeger's UI is on {host}:{port}"
        )]
    }
}

fn k8s_address_problems(inp: &Inputs) -> Vec<String> {
    let units = k8s_units(inp);
    let resolve = |host: &str, port: u16| -> Result<(String, u16), String> {
        // `kafka-0.kafka`: a StatefulSet pod's name under its headless Service.
        let svc_name = match host.split_once('.') {
            Some((_, svc)) if services(&inp.objs).any(|s| s.metadata.name == svc) => svc,
            _ => host,
        };
        let svc = services(&inp.objs)
            .find(|s| s.metadata.name == svc_name)
            .ok_or(format!("no Service {svc_name}"))?;
        let sp = svc
            .spec
            .ports
            .iter()
            .find(|p| p.port == port)
            .ok_or(format!("Service {svc_name} has no port {port}"))?;
        let selector = svc.spec.selector["app.kubernetes.io/name"].as_str();
        let w = workloads(&inp.objs)
            .map(|(_, w)| w)
            .find(|w| w.app_label() == Some(selector))
            .ok_or(format!("Service {svc_name} selects no workload"))?;
        let target = sp
            .target_port
            .as_ref()
            .and_then(|t| w.container().port(t))
            .ok_or(format!(
                "Service {svc_name} port {port}: targetPort {:?} is not a container port",
                sp.target_port
            ))?;
        Ok((w.metadata.name.clone(), target))
    };
    let mut problems = address_problems(&units, resolve);
    // kind: the node ports the overlay sets are the ones the cluster maps to localhost.
    let mappings = inp
        .kind
        .nodes
        .first()
        .map(|n| n.extra_port_mappings.clone())
        .unwrap_or_default();
    let mut host_of_service = BTreeMap::new();
    for s in services(&inp.objs) {
        for p in &s.spec.ports {
            if let Some(np) = p.node_port {
                match mappings.iter().find(|m| m.container_port == np) {
                    Some(m) => {
                        host_of_service.insert(s.metadata.name.clone(), (m.host_port, p.port));
                        if m.listen_address.as_deref() != Some("127.0.0.1") {
                            problems.push(format!(
                                "kind maps {np} on {:?} instead of 127.0.0.1",
                                m.listen_address
                            ));
                        }
                    }
                    None => problems.push(format!(
                        "nodePort {np} of {:?} is not mapped by kind",
                        s.metadata.name
                    )),
                }
            }
        }
    }
    let jaeger_ui = units.iter().find(|u| u.name == "jaeger").map(|j| {
        let cfg = yaml(&resolve_env_refs(&read("deploy/jaeger/config.yaml"), &j.env)).unwrap();
        endpoint_port(
            cfg.pointer("/extensions/jaeger_query/http/endpoint")
                .unwrap()
                .as_str()
                .unwrap(),
        )
        .1
    });
    for (svc, container_side, host) in [("order", Some(8080), 8080), ("jaeger", jaeger_ui, 16686)] {
        match host_of_service.get(svc) {
            Some((h, port)) if *h == host => match resolve(svc, *port) {
                Ok((_, p)) if Some(p) == container_side => {}
                other => problems.push(format!(
                    "{svc} on localhost:{host} reaches {other:?}, not {container_side:?}"
                )),
            },
            other => problems.push(format!("{svc} is not on localhost:{host} in kind: {other:?}")),
        }
    }
    problems.extend(jaeger_ui_link_problems(&units, "localhost", 16686));
    problems
}

#[test]
fn every_address_in_compose_points_at_a_port_that_listens() {
    let p = compose_address_problems(&inputs());
    assert!(p.is_empty(), "{p:#?}");
}

#[test]
fn every_address_in_the_manifests_points_at_a_port_that_listens() {
    let p = k8s_address_problems(&inputs());
    assert!(p.is_empty(), "{p:#?}");
}

#[test]
fn a_wrong_port_or_host_anywhere_is_found() {
    let good = inputs();
    let compose_cases: [Breakage; 6] = [
        ("kitchen URL port", |i| {
            set_compose_env(i, "delivery", "PIZZA_KITCHEN_URL", "http://kitchen:8082")
        }),
        ("unknown host", |i| {
            set_compose_env(i, "order", "PIZZA_KAFKA_BOOTSTRAP", "broker:9092")
        }),
        ("loopback listener", |i| {
            set_compose_env(i, "kitchen", "PIZZA_KITCHEN_ADDR", "127.0.0.1:8081")
        }),
        ("health check port", |i| {
            let check = i.compose.service_mut("order").healthcheck.as_mut().unwrap();
            check.test[2] = "http://127.0.0.1:8081/readyz".into()
        }),
        ("Jaeger address in the Collector", |i| {
            set_compose_env(i, "otel-collector", "JAEGER_OTLP_ENDPOINT", "jaeger:14317")
        }),
        ("published port", |i| {
            i.compose.service_mut("order").ports[0] = "127.0.0.1:8080:8088".into()
        }),
    ];
    for (name, breakage) in compose_cases {
        let mut broken = good.clone();
        breakage(&mut broken);
        assert_ne!(broken.compose, good.compose, "{name}");
        assert!(
            !compose_address_problems(&broken).is_empty(),
            "compose: {name} not found"
        );
    }
    let set_env = |i: &mut Inputs, workload: &str, var: &str, value: &str| {
        let w = i
            .objs
            .iter_mut()
            .filter_map(Object::workload_mut)
            .find(|w| w.metadata.name == workload)
            .unwrap();
        w.container_mut().set_env(var, value);
    };
    let k8s_cases: [BoxedBreakage; 5] = [
        (
            "otlp endpoint port",
            Box::new(move |i| {
                set_env(
                    i,
                    "order",
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "http://otel-collector:4319",
                )
            }),
        ),
        (
            "kafka advertised host",
            Box::new(move |i| {
                set_env(
                    i,
                    "kafka",
                    "KAFKA_ADVERTISED_LISTENERS",
                    "PLAINTEXT://kafka-1.kfk:9092",
                )
            }),
        ),
        (
            "probe port",
            Box::new(|i| {
                let c = workload_mut(&mut i.objs, "Deployment", "kitchen").container_mut();
                c.readiness_probe
                    .as_mut()
                    .unwrap()
                    .http_get
                    .as_mut()
                    .unwrap()
                    .port = PortRef::Number(9999);
            }),
        ),
        (
            "service target port",
            Box::new(|i| {
                service_mut(&mut i.objs, "delivery").spec.ports[0].target_port = Some(PortRef::Number(8081));
            }),
        ),
        (
            "kind port mapping",
            Box::new(|i| i.kind.nodes[0].extra_port_mappings[0].container_port = 30081),
        ),
    ];
    for (name, breakage) in k8s_cases {
        let mut broken = good.clone();
        breakage(&mut broken);
        assert!(
            !k8s_address_problems(&broken).is_empty(),
            "kubernetes: {name} not found"
        );
    }
}

/// Sets a variable of a compose service's environment (a breakage).
fn set_compose_env(i: &mut Inputs, service: &str, var: &str, value: &str) {
    i.compose
        .service_mut(service)
        .environment
        .insert(var.into(), value.into());
}

#[test]
fn the_containers_listen_on_the_ports_the_services_default_to() {
    // Native, compose and Kubernetes use one port per service: the image's address keeps the port of
    // the service's own default and only opens the host.
    let dockerfile = read("deploy/Dockerfile");
    for svc in ["order", "kitchen", "delivery"] {
        let env = dockerfile_env(&dockerfile, svc);
        let addr = &env[&format!("PIZZA_{}_ADDR", svc.to_uppercase())];
        let default = default_addr(svc).unwrap();
        assert_eq!(
            host_port(addr).unwrap().1,
            host_port(&default).unwrap().1,
            "{svc}"
        );
        assert_eq!(
            host_port(addr).unwrap().0,
            "0.0.0.0",
            "{svc} must be reachable from other containers"
        );
    }
}

// ---- the fault admin API's token ---------------------------------------------------------------------

/// A service's admin token as a deployment gives it, by default, checked against the listen address
/// with the services' own rule; a token made at deploy time is checked where it is made
/// (deploy/kind/up.sh). In Kubernetes, no Secret of [`DEPLOY_TIME_SECRETS`] may be rendered.
fn admin_token_problems(inp: &Inputs) -> Vec<String> {
    let mut problems = vec![];
    for (deployment, units) in [("compose", compose_units(inp)), ("kubernetes", k8s_units(inp))] {
        for u in &units {
            let Some(token) = u.env.get("PIZZA_ADMIN_TOKEN") else {
                continue;
            };
            if DEPLOY_TIME_SECRETS
                .iter()
                .any(|(name, key)| *token == deploy_time_value(name, key))
            {
                continue;
            }
            for (port, host) in &u.listens {
                let ip: IpAddr = host
                    .parse()
                    .unwrap_or_else(|e| panic!("{}: listens on {host:?}: {e}", u.name));
                if let Err(e) =
                    pizza_servicekit::faults::admin_access(Some(token), SocketAddr::new(ip, *port))
                {
                    problems.push(format!("{deployment} {}: {e}", u.name));
                }
            }
        }
    }
    for (name, _) in DEPLOY_TIME_SECRETS {
        if secret(&inp.objs, name).is_some() {
            problems.push(format!(
                "kubernetes: Secret {name} is rendered; it is made at deploy time (deploy/kind/up.sh)"
            ));
        }
    }
    problems
}

#[test]
fn no_service_beyond_loopback_is_given_a_published_or_short_admin_token() {
    let p = admin_token_problems(&inputs());
    assert!(p.is_empty(), "{p:#?}");
}

#[test]
fn a_published_or_short_admin_token_or_a_rendered_token_secret_is_found() {
    let good = inputs();
    let rendered_secret = |i: &mut Inputs, token: &str| {
        use base64::Engine as _;
        i.objs.push(Object::Secret(Data {
            metadata: Metadata {
                name: "admin-token".into(),
                ..Metadata::default()
            },
            data: BTreeMap::from([(
                "PIZZA_ADMIN_TOKEN".into(),
                base64::engine::general_purpose::STANDARD.encode(token),
            )]),
        }));
    };
    let cases: [BoxedBreakage; 4] = [
        (
            "compose default of the workshop token",
            Box::new(|i| {
                set_compose_env(
                    i,
                    "order",
                    "PIZZA_ADMIN_TOKEN",
                    pizza_servicekit::WORKSHOP_ADMIN_TOKEN,
                )
            }),
        ),
        (
            "compose default of a short token",
            Box::new(|i| set_compose_env(i, "kitchen", "PIZZA_ADMIN_TOKEN", "letmein")),
        ),
        (
            "a rendered Secret with the workshop token",
            Box::new(move |i| rendered_secret(i, pizza_servicekit::WORKSHOP_ADMIN_TOKEN)),
        ),
        (
            "a rendered Secret, even with a long token",
            Box::new(move |i| rendered_secret(i, "0123456789abcdef0123456789abcdef")),
        ),
    ];
    for (name, breakage) in cases {
        let mut broken = good.clone();
        breakage(&mut broken);
        let p = admin_token_problems(&broken);
        assert!(!p.is_empty(), "{name} not found");
        eprintln!("{name}: {p:?}");
    }
}

// ---- environment variables ----------------------------------------------------------------------------

fn env_problems(inp: &Inputs) -> Vec<String> {
    let mut problems = vec![];
    let mut check = |origin: &str, unit: &str, image: &str, names: Vec<String>| {
        if let Some(readable) = readable_env(unit, image) {
            for n in names {
                if !readable.contains(&n) {
                    problems.push(format!("{origin} {unit}: {n} is read by nothing in it"));
                }
            }
        }
    };
    for (name, svc) in &inp.compose.services {
        check(
            "compose",
            name,
            &program_image(&inp.dockerfile, svc.target(), &svc.image),
            svc.environment.keys().cloned().collect(),
        );
    }
    for (_, w) in workloads(&inp.objs) {
        let c = w.container();
        let names = c.env.iter().map(|e| e.name.clone()).collect();
        check("kubernetes", &w.metadata.name, &c.image, names);
    }
    for svc in ["order", "kitchen", "delivery", "load"] {
        let names = dockerfile_env(&inp.dockerfile, svc).into_keys().collect();
        check("Dockerfile", svc, &format!("pizza/{svc}"), names);
    }
    problems
}

#[test]
fn every_variable_set_is_read_by_the_program_it_is_set_for() {
    let p = env_problems(&inputs());
    assert!(p.is_empty(), "{p:#?}");
    // The sets are derived, not empty: a service reads its address and the telemetry variables.
    let order = readable_env("order", "pizza/order").unwrap();
    for n in [
        "PIZZA_ORDER_ADDR",
        "DATABASE_URL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "PIZZA_TRACE_TOPOLOGY",
    ] {
        assert!(order.contains(n), "{n}");
    }
}

#[test]
fn a_variable_nothing_reads_is_found() {
    let good = inputs();
    let cases: [Breakage; 4] = [
        ("misspelt service variable", |i| {
            set_compose_env(i, "kitchen", "PIZZA_KITCHEN_OVEN", "2")
        }),
        ("another service's address", |i| {
            set_compose_env(i, "kitchen", "PIZZA_ORDER_ADDR", "0.0.0.0:1")
        }),
        ("Collector variable its config does not read", |i| {
            set_compose_env(i, "otel-collector", "OTELCOL_LISTEN_PORT", "1")
        }),
        ("Dockerfile ENV", |i| {
            i.dockerfile = i
                .dockerfile
                .replace("ENV PIZZA_KITCHEN_ADDR=", "ENV PIZZA_KITCHEN_ADRESS=")
        }),
    ];
    for (name, breakage) in cases {
        let mut broken = good.clone();
        breakage(&mut broken);
        assert!(!env_problems(&broken).is_empty(), "{name} not found");
    }
    let mut broken = good.clone();
    workload_mut(&mut broken.objs, "Deployment", "delivery")
        .container_mut()
        .env
        .push(support::model::EnvVar {
            name: "PIZZA_DELIVERY_DRIVERS".into(),
            value: Some("3".into()),
            value_from: None,
        });
    assert!(
        !env_problems(&broken).is_empty(),
        "kubernetes: an unread variable not found"
    );
}

// ---- images -------------------------------------------------------------------------------------------

fn images(inp: &Inputs) -> Vec<(String, String)> {
    let mut all = vec![];
    for (name, svc) in &inp.compose.services {
        all.push((format!("compose {name}"), svc.image.clone()));
    }
    for (_, w) in workloads(&inp.objs) {
        all.push((
            format!("kubernetes {:?}", w.metadata.name),
            w.container().image.clone(),
        ));
    }
    let stages: BTreeSet<&str> = inp
        .dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    for l in inp.dockerfile.lines().filter_map(|l| l.strip_prefix("FROM ")) {
        let image = l.split_whitespace().next().unwrap();
        if !stages.contains(image) {
            all.push(("Dockerfile".into(), image.to_owned()));
        }
    }
    for n in &inp.kind.nodes {
        all.push(("kind node".into(), n.image.clone()));
    }
    all
}

fn tag(image: &str) -> Option<&str> {
    let last = image.rsplit('/').next().unwrap();
    last.split_once(':').map(|(_, t)| t)
}

fn infra_var(name: &str) -> String {
    let infra = read("deploy/local/infra.sh");
    let line = infra
        .lines()
        .find(|l| l.starts_with(&format!("{name}=")))
        .unwrap();
    line.split_once('=').unwrap().1.to_owned()
}

fn image_problems(inp: &Inputs) -> Vec<String> {
    let mut problems = vec![];
    let mut by_repo: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (origin, image) in images(inp) {
        match tag(&image) {
            Some(t) if t != "latest" && t.chars().any(|c| c.is_ascii_digit()) => {
                by_repo
                    .entry(image[..image.len() - t.len() - 1].to_owned())
                    .or_default()
                    .insert(t.to_owned());
            }
            _ => problems.push(format!("{origin}: image {image:?} is not pinned to a version")),
        }
    }
    for (repo, tags) in &by_repo {
        if tags.len() > 1 {
            problems.push(format!("{repo} is pinned to several versions: {tags:?}"));
        }
    }
    let version = |repo: &str| {
        by_repo
            .get(repo)
            .and_then(|t| t.first().cloned())
            .unwrap_or_default()
    };
    let workspace = yaml_like_value(&read("Cargo.toml"), "version");
    for svc in ["order", "kitchen", "delivery", "load", "otel-collector"] {
        if version(&format!("pizza/{svc}")) != workspace {
            problems.push(format!(
                "pizza/{svc} is not tagged with the workspace version {workspace}"
            ));
        }
    }
    let collector = yaml(&read("otel-collector/builder-config.yaml")).unwrap()["dist"]["version"].clone();
    if version("otel/opentelemetry-collector-contrib") != scalar(&collector) {
        problems.push(format!(
            "the Collector image is not the native Collector's version {collector}"
        ));
    }
    if version("apache/kafka") != infra_var("KAFKA_VERSION") {
        problems.push("the Kafka image is not the native broker's version".into());
    }
    let jaeger = version("jaegertracing/jaeger");
    let native = infra_var("JAEGER_VERSION");
    if native.trim_start_matches('v') != jaeger {
        problems.push(format!(
            "the Jaeger image {jaeger} is not the native build {native}"
        ));
    }
    let toolchain = yaml_like_value(&read("rust-toolchain.toml"), "channel");
    if !version("rust").starts_with(&format!("{toolchain}-")) {
        problems.push(format!(
            "the Rust image {} is not rust-toolchain.toml's {toolchain}",
            version("rust")
        ));
    }
    // The runtime's Debian release is the builder's, so the binaries find the glibc they linked.
    let codename = |major: &str| match major {
        "12" => "bookworm",
        "13" => "trixie",
        _ => "unknown",
    };
    let runtime = version("debian");
    if !version("rust").ends_with(codename(runtime.split('.').next().unwrap())) {
        problems.push(format!(
            "builder {} and runtime debian:{runtime} are different Debian releases",
            version("rust")
        ));
    }
    problems
}

/// The first `key = "value"` of a TOML file (enough for Cargo.toml's workspace version and the
/// toolchain's channel).
fn yaml_like_value(toml: &str, key: &str) -> String {
    let line = toml
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap();
    line.split('"').nth(1).unwrap().to_owned()
}

#[test]
fn every_image_is_pinned_and_matches_the_native_stack() {
    let p = image_problems(&inputs());
    assert!(p.is_empty(), "{p:#?}");
}

#[test]
fn an_unpinned_or_drifting_image_is_found() {
    let good = inputs();
    let cases: [Breakage; 6] = [
        ("latest", |i| {
            i.compose.service_mut("postgres").image = "postgres:latest".into()
        }),
        ("untagged", |i| {
            i.compose.service_mut("prometheus").image = "prom/prometheus".into()
        }),
        ("compose and kubernetes differ", |i| {
            i.compose.service_mut("jaeger").image = "jaegertracing/jaeger:2.13.0".into()
        }),
        ("Collector drifts from the builder", |i| {
            i.dockerfile
                .push_str("\nFROM otel/opentelemetry-collector-contrib:0.150.0 AS x\n")
        }),
        ("Rust drifts from the toolchain", |i| {
            i.dockerfile = i.dockerfile.replace("rust:1.95.0-", "rust:1.94.0-")
        }),
        ("runtime on another Debian", |i| {
            i.dockerfile = i.dockerfile.replace("debian:13.1-slim", "debian:12.11-slim")
        }),
    ];
    for (name, breakage) in cases {
        let mut broken = good.clone();
        breakage(&mut broken);
        assert!(!image_problems(&broken).is_empty(), "{name} not found");
    }
}

// ---- health checks, probes, resources -----------------------------------------------------------------

fn health_problems(inp: &Inputs) -> Vec<String> {
    let mut problems = vec![];
    let services = &inp.compose.services;
    for (name, svc) in services {
        let has_check = svc.healthcheck.is_some();
        if !svc.one_shot() && !has_check {
            problems.push(format!("compose {name}: no healthcheck"));
        }
        if service_command(name).is_some() && !svc.health_test().join(" ").contains("/readyz") {
            problems.push(format!("compose {name}: the healthcheck does not ask /readyz"));
        }
        for (dep, cond) in &svc.depends_on {
            let target = &services[dep];
            match cond.condition.as_str() {
                "service_healthy" if target.healthcheck.is_none() => problems.push(format!(
                    "compose {name} waits for {dep} to be healthy; it has no healthcheck"
                )),
                "service_completed_successfully" if !target.one_shot() => problems.push(format!(
                    "compose {name} waits for {dep} to complete; it is not one-shot"
                )),
                _ => {}
            }
        }
    }
    for (_, w) in workloads(&inp.objs).filter(|(kind, _)| *kind != "Job") {
        let name = w.metadata.name.as_str();
        let c = w.container();
        for probe in ["readinessProbe", "livenessProbe"] {
            if c.probe(probe).is_none() {
                problems.push(format!("kubernetes {name}: no {probe}"));
            }
        }
        for r in ["cpu", "memory"] {
            if !c.resources.requests.contains_key(r) {
                problems.push(format!("kubernetes {name}: no {r} request"));
            }
        }
        if service_command(name).is_some() {
            for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
                let asked = c
                    .probe(probe)
                    .and_then(|p| p.http_get.as_ref())
                    .and_then(|h| h.path.as_deref());
                if asked != Some(path) {
                    problems.push(format!("kubernetes {name}: {probe} does not ask {path}"));
                }
            }
        }
    }
    problems
}

#[test]
fn every_service_has_a_health_check_and_probes() {
    let p = health_problems(&inputs());
    assert!(p.is_empty(), "{p:#?}");
}

#[test]
fn a_missing_health_check_or_probe_is_found() {
    let good = inputs();
    let cases: [Breakage; 5] = [
        ("compose healthcheck", |i| {
            i.compose.service_mut("kitchen").healthcheck = None;
        }),
        ("healthcheck on /healthz", |i| {
            let check = i.compose.service_mut("order").healthcheck.as_mut().unwrap();
            check.test[2] = "http://127.0.0.1:8080/healthz".into()
        }),
        ("depends on a service without a check", |i| {
            let order = i.compose.service_mut("order");
            order.depends_on.get_mut("kafka-init").unwrap().condition = "service_healthy".into();
        }),
        ("liveness probe", |i| {
            workload_mut(&mut i.objs, "StatefulSet", "kafka")
                .container_mut()
                .liveness_probe = None;
        }),
        ("resource request", |i| {
            workload_mut(&mut i.objs, "Deployment", "order")
                .container_mut()
                .resources
                .requests
                .clear();
        }),
    ];
    for (name, breakage) in cases {
        let mut broken = good.clone();
        breakage(&mut broken);
        assert!(!health_problems(&broken).is_empty(), "{name} not found");
    }
}

// ---- topics -------------------------------------------------------------------------------------------

fn topic_problems(inp: &Inputs) -> Vec<String> {
    let mut problems = vec![];
    let native = topics(&read("deploy/local/kafka/topics.txt"));
    let script = read("deploy/kafka/create-topics.sh");
    // compose: kafka-init mounts the native list itself where the script reads it.
    let init = inp.compose.service("kafka-init");
    let file = init.environment.get("TOPICS_FILE").cloned().unwrap_or_default();
    let mounted = |target: &str| {
        init.volumes.iter().find_map(|m| {
            let parts: Vec<&str> = m.split(':').collect();
            (parts.get(1) == Some(&target)).then(|| root().join("deploy").join(parts[0]))
        })
    };
    match mounted(&file) {
        Some(src) if std::fs::read_to_string(&src).ok().map(|t| topics(&t)) == Some(native.clone()) => {}
        other => problems.push(format!(
            "compose kafka-init: {file} is {other:?}, not the native topic list"
        )),
    }
    match (init.command.last(), mounted("/etc/pizza/create-topics.sh")) {
        (Some(cmd), Some(src))
            if cmd == "/etc/pizza/create-topics.sh"
                && std::fs::read_to_string(&src).ok() == Some(script.clone()) => {}
        other => problems.push(format!(
            "compose kafka-init does not run deploy/kafka/create-topics.sh: {other:?}"
        )),
    }
    // Kubernetes: the Job mounts the generated ConfigMap holding the same list and script.
    let Some(cm) = generated_config_map(&inp.objs, "kafka-topics") else {
        return vec!["no kafka-topics ConfigMap".into()];
    };
    if topics(cm.data.get("topics.txt").map_or("", String::as_str)) != native {
        problems.push("kubernetes: the kafka-topics ConfigMap is not the native topic list".into());
    }
    if cm.data.get("create-topics.sh") != Some(&script) {
        problems.push("kubernetes: the kafka-topics ConfigMap does not carry create-topics.sh".into());
    }
    let job = workloads(&inp.objs)
        .find(|(kind, w)| *kind == "Job" && w.metadata.name == "kafka-topics")
        .map(|(_, w)| w)
        .expect("a kafka-topics Job");
    let env = container_env(&inp.objs, job.container());
    let dir = env
        .get("TOPICS_FILE")
        .and_then(|f| f.rsplit_once('/'))
        .map(|(d, _)| d.to_owned());
    let mount = job.container().volume_mounts.first();
    let volume = job.spec.template.spec.volumes.first();
    let mounts_list = mount.map(|m| m.mount_path.clone()) == dir;
    let of_config_map = volume
        .and_then(|v| v.config_map.as_ref())
        .is_some_and(|c| c.name == cm.metadata.name);
    if !mounts_list || !of_config_map {
        problems.push(format!(
            "kubernetes: the Job does not mount the topic list at {dir:?}"
        ));
    }
    problems
}

#[test]
fn the_topic_init_steps_create_the_native_topic_list() {
    let p = topic_problems(&inputs());
    assert!(p.is_empty(), "{p:#?}");
    assert!(topics(&read("deploy/local/kafka/topics.txt")).len() >= 8);
}

#[test]
fn a_drifting_topic_list_is_found() {
    let good = inputs();
    let cases: [Breakage; 3] = [
        ("compose mounts another list", |i| {
            i.compose.service_mut("kafka-init").volumes[1] =
                "./local/kafka/server.properties:/etc/pizza/topics.txt:ro".into()
        }),
        ("a topic missing in the ConfigMap", |i| {
            let cm = generated_config_map_mut(&mut i.objs, "kafka-topics");
            let text = cm.data["topics.txt"].replace("delivery.events 3\n", "");
            cm.data.insert("topics.txt".into(), text);
        }),
        ("another partition count", |i| {
            let cm = generated_config_map_mut(&mut i.objs, "kafka-topics");
            let text = cm.data["topics.txt"].replace("orders.events 3", "orders.events 1");
            cm.data.insert("topics.txt".into(), text);
        }),
    ];
    for (name, breakage) in cases {
        let mut broken = good.clone();
        breakage(&mut broken);
        assert_ne!(topic_problems(&broken), topic_problems(&good), "{name}");
        assert!(!topic_problems(&broken).is_empty(), "{name} not found");
    }
}

// ---- memory -------------------------------------------------------------------------------------------

fn mib(limit: &str) -> Option<u64> {
    let (n, unit) = limit.split_at(limit.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    match unit.to_ascii_lowercase().as_str() {
        "m" | "mb" => Some(n),
        "g" | "gb" => Some(n * 1024),
        _ => None,
    }
}

/// (sum of the default profile's long-running limits in MiB, problems).
fn memory_problems(inp: &Inputs) -> (u64, Vec<String>) {
    let mut problems = vec![];
    let mut sum = 0;
    for (name, svc) in &inp.compose.services {
        if !svc.profiles.is_empty() {
            continue;
        }
        match svc.mem_limit.as_deref().and_then(mib) {
            Some(m) if !svc.one_shot() => sum += m,
            Some(_) => {}
            None => problems.push(format!("compose {name}: no mem_limit in m or g")),
        }
    }
    if sum > FOOTPRINT_MIB {
        problems.push(format!(
            "the default profile's limits add up to {sum} MiB, over {FOOTPRINT_MIB}"
        ));
    }
    (sum, problems)
}

#[test]
fn the_default_profile_fits_in_the_stated_footprint() {
    let (sum, p) = memory_problems(&inputs());
    assert!(p.is_empty(), "{p:#?}");
    eprintln!("compose default profile: memory limits add up to {sum} MiB (stated: under {FOOTPRINT_MIB})");
}

#[test]
fn a_container_without_a_limit_or_over_the_budget_is_found() {
    let mut broken = inputs();
    broken.compose.service_mut("kafka").mem_limit = Some("1g".into());
    assert!(!memory_problems(&broken).1.is_empty(), "over budget not found");
    let mut broken = inputs();
    broken.compose.service_mut("jaeger").mem_limit = None;
    assert!(
        !memory_problems(&broken).1.is_empty(),
        "a missing limit not found"
    );
}

// ---- the Dockerfile builds what compose and kind ask for ----------------------------------------------

fn dockerfile_problems(inp: &Inputs, bins: &BTreeSet<String>) -> Vec<String> {
    let mut problems = vec![];
    let stages: BTreeSet<String> = inp
        .dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect();
    let up = read("deploy/kind/up.sh");
    let mut targets: BTreeSet<String> = inp
        .compose
        .services
        .values()
        .filter_map(|s| s.target().map(str::to_owned))
        .collect();
    let kind_targets = up.lines().find(|l| l.starts_with("for svc in")).unwrap();
    // `for svc in order kitchen delivery; do`
    let listed = kind_targets
        .trim_start_matches("for svc in")
        .split(';')
        .next()
        .unwrap();
    targets.extend(listed.split_whitespace().map(str::to_owned));
    for t in &targets {
        if !stages.contains(t) {
            problems.push(format!("no Dockerfile stage {t}"));
            continue;
        }
        // Our programs' stages run their binary; the others extend an upstream image (the Collector).
        let ours = program_image(&inp.dockerfile, Some(t), "ours") == "ours";
        let entry = format!("ENTRYPOINT [\"/usr/local/bin/pizza-{t}\"]");
        if ours && !inp.dockerfile.contains(&entry) {
            problems.push(format!("stage {t} does not run pizza-{t}"));
        }
    }
    for w in inp.dockerfile.split_whitespace().collect::<Vec<_>>().windows(2) {
        if w[0] == "--bin" && !bins.contains(w[1]) {
            problems.push(format!("the Dockerfile builds --bin {}, no package has it", w[1]));
        }
    }
    problems
}

/// `cargo metadata` of the workspace's own packages.
fn cargo_metadata() -> Value {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The binaries of the workspace, from `cargo metadata`.
fn workspace_bins() -> BTreeSet<String> {
    let meta = cargo_metadata();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| scalar(&t["name"]))
        .collect()
}

#[test]
fn the_dockerfile_builds_every_image_compose_and_kind_ask_for() {
    let bins = workspace_bins();
    let p = dockerfile_problems(&inputs(), &bins);
    assert!(p.is_empty(), "{p:#?}");
    let mut broken = inputs();
    broken
        .compose
        .service_mut("kitchen")
        .build
        .as_mut()
        .unwrap()
        .target = Some("kitchens".into());
    assert!(
        !dockerfile_problems(&broken, &bins).is_empty(),
        "a missing stage not found"
    );
    let mut broken = inputs();
    broken.dockerfile = broken
        .dockerfile
        .replace("--bin pizza-probe", "--bin pizza-prober");
    assert!(
        !dockerfile_problems(&broken, &bins).is_empty(),
        "a binary no package has not found"
    );
}

// ---- the image build's context -------------------------------------------------------------------------

/// Whether .dockerignore keeps `path` (relative to the root, `/`-separated) out of the build context,
/// for the pattern forms it uses: `dir/` (everything below), `**/name/` (a directory of that name
/// anywhere), a plain path, and `!` to keep; the last pattern that matches decides, as in Docker.
fn docker_ignored(dockerignore: &str, path: &str) -> bool {
    let mut ignored = false;
    for line in dockerignore.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (keep, pattern) = match line.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, line),
        };
        let pattern = pattern.trim_start_matches('/').trim_end_matches('/');
        let hit = match pattern.strip_prefix("**/") {
            Some(name) => path.split('/').any(|c| c == name),
            None => path == pattern || path.starts_with(&format!("{pattern}/")),
        };
        if hit {
            ignored = !keep;
        }
    }
    ignored
}

/// Every workspace member's manifest is in the image build's context: `cargo chef prepare` and
/// `cargo build` read all of them, whatever they build.
fn build_context_problems(dockerignore: &str, manifests: &[String]) -> Vec<String> {
    manifests
        .iter()
        .filter(|m| docker_ignored(dockerignore, m))
        .map(|m| format!(".dockerignore leaves the workspace member {m} out of the image build"))
        .collect()
}

/// The manifests of the workspace's members, relative to the root.
fn workspace_manifests() -> Vec<String> {
    let root = root();
    cargo_metadata()["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let path = std::path::PathBuf::from(scalar(&p["manifest_path"]));
            path.strip_prefix(&root).unwrap().to_string_lossy().into_owned()
        })
        .collect()
}

#[test]
fn the_image_build_context_holds_every_workspace_member() {
    let dockerignore = read(".dockerignore");
    let manifests = workspace_manifests();
    assert!(manifests.iter().any(|m| m == "docs/workshop/check/Cargo.toml"));
    let p = build_context_problems(&dockerignore, &manifests);
    assert!(p.is_empty(), "{p:#?}");
    let broken = dockerignore.replace("!docs/workshop/check/", "");
    assert_ne!(broken, dockerignore);
    assert!(
        !build_context_problems(&broken, &manifests).is_empty(),
        "a member left out of the context not found"
    );
}

#[test]
fn dockerignore_patterns_match_as_docker_does() {
    let rules = "**/target/\ndocs/\n!docs/workshop/check/\ndeploy/Dockerfile\n";
    assert!(docker_ignored(rules, "services/order/target/debug/x"));
    assert!(docker_ignored(rules, "docs/deployments.md"));
    assert!(!docker_ignored(rules, "docs/workshop/check/Cargo.toml"));
    assert!(docker_ignored(rules, "deploy/Dockerfile"));
    assert!(!docker_ignored(rules, "deploy/Dockerfile.other"));
    assert!(!docker_ignored(rules, "services/order/Cargo.toml"));
}

// ---- the helpers' own behaviour -----------------------------------------------------------------------

#[test]
fn interpolation_follows_compose() {
    assert_eq!(
        interpolate("a ${X:-1.0} b ${Y-z} c ${W} $$name $V."),
        "a 1.0 b z c  $name ."
    );
}

#[test]
fn addresses_parse_from_urls_and_host_port_pairs() {
    assert_eq!(host_port("postgres://u:p@db:5432/x"), Some(("db".into(), 5432)));
    assert_eq!(host_port("http://kitchen:8081"), Some(("kitchen".into(), 8081)));
    assert_eq!(host_port("PLAINTEXT://kafka:9092"), Some(("kafka".into(), 9092)));
    assert_eq!(host_port("kafka:9092"), Some(("kafka".into(), 9092)));
    assert_eq!(host_port("http://kitchen/x"), None);
}
