//! Scenarios: what load to drive and what to break, as YAML files in `loadtest/scenarios/`.
//!
//! A scenario is data, not code, so a workshop can copy one, change a number and run it without
//! compiling anything, and so the report can quote exactly what was run. The format:
//!
//! ```yaml
//! name: kafka-outage              # also the file name and the `--scenario` argument
//! description: Stop the Kafka broker for 20 s, then start it again.
//! rate: 4                         # orders per second (open loop); `--rate` overrides it
//! duration: 60s                   # how long arrivals go on; `--duration` overrides it
//! expect:                         # what the verification must find (tests and `--strict` check it)
//!   lost: 0                       # accepted orders not in exactly one terminal state
//!   duplicated_side_effects: 0    # second tickets, deliveries, captures, order-completed events
//!   min_trace_completeness: 1.0   # share of orders whose every expected span is in Jaeger
//!   fragmentation: none           # none | detected | any
//! faults:
//!   - at: 10s                     # since the first arrival
//!     for: 20s                    # undo the fault after this long (required for kill and stop;
//!                                 # a fault plan without it is cleared when the run is over)
//!     action: stop                # stop | kill | fault-plan | poison
//!     target: kafka               # see below
//! ```
//!
//! Actions and their targets:
//! - `kill` (SIGKILL) and `stop` (graceful) a process: `order`, `kitchen`, `delivery`, `kafka`,
//!   `collector`; with `for`, it is started again afterwards. How is the platform's business
//!   ([`crate::faults`]): by pid on the native stack, `docker compose kill/stop/start` on compose.
//! - `fault-plan`: put `plan` (a `pizza_servicekit::FaultPlan`) on `order`, `kitchen` or `delivery`
//!   through its admin API; with `for`, the plan is cleared afterwards. Topic names in
//!   `drop_trace_context` are the defaults and are rewritten to the run's topics.
//! - `poison`: write `count` malformed records into the topic `target` (a default topic name).
//!
//! Durations are written `250ms`, `20s` or `2m`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parsed, checked scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, the file's stem.
    pub name: String,
    /// One sentence for the report.
    pub description: String,
    /// Orders per second.
    pub rate: f64,
    /// How long arrivals go on.
    #[serde(with = "human_duration")]
    pub duration: Duration,
    /// What the verification must find.
    #[serde(default)]
    pub expect: Expect,
    /// What to break, and when.
    #[serde(default)]
    pub faults: Vec<Fault>,
}

/// What the verification of a run must find.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Expect {
    /// Accepted orders that did not end in exactly one terminal state.
    pub lost: u64,
    /// Side effects that happened more than once.
    pub duplicated_side_effects: u64,
    /// The least share (0 to 1) of orders whose traces are complete.
    pub min_trace_completeness: Option<f64>,
    /// Whether the traces must be whole, must show fragmentation, or may be either.
    pub fragmentation: Fragmentation,
}

impl Default for Expect {
    fn default() -> Self {
        Self {
            lost: 0,
            duplicated_side_effects: 0,
            min_trace_completeness: None,
            fragmentation: Fragmentation::Any,
        }
    }
}

/// What fragmentation the verification must find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fragmentation {
    /// Every order's spans form one connected graph (parents and links).
    None,
    /// At least one order falls apart into unconnected fragments.
    Detected,
    /// Not checked.
    Any,
}

/// One fault of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// When, counted from the first arrival.
    #[serde(with = "human_duration")]
    pub at: Duration,
    /// How long it lasts; `None` means until the end of the run (or instantaneous, for `poison`).
    #[serde(default, rename = "for", with = "opt_human_duration")]
    pub duration: Option<Duration>,
    /// What to do.
    pub action: Action,
    /// To what (see the module docs).
    pub target: String,
    /// The fault plan of a `fault-plan` action.
    #[serde(default)]
    pub plan: Option<serde_json::Value>,
    /// Records of a `poison` action.
    #[serde(default)]
    pub count: Option<u32>,
}

/// The fault actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// SIGKILL a process (restarted after `for`).
    Kill,
    /// Stop a process gracefully (started again after `for`).
    Stop,
    /// Set a service's fault plan (cleared after `for`).
    FaultPlan,
    /// Write malformed records into a topic.
    Poison,
}

/// The processes a `kill` or `stop` may name.
pub const PROCESSES: &[&str] = &["order", "kitchen", "delivery", "kafka", "collector"];
/// The services with an admin API.
pub const SERVICES: &[&str] = &["order", "kitchen", "delivery"];

/// Why a scenario could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("reading scenario {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid YAML for the format.
    #[error("scenario {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_yaml_ng::Error,
    },
    /// Parsed, but inconsistent.
    #[error("scenario {name}: {problem}")]
    Invalid {
        /// The scenario.
        name: String,
        /// What is wrong.
        problem: String,
    },
}

impl Scenario {
    /// Reads `loadtest/scenarios/{name}.yaml` from `dir`, or `name` itself if it is a path to a file.
    pub fn load(dir: &Path, name: &str) -> Result<Self, ScenarioError> {
        let path = if name.ends_with(".yaml") || name.contains('/') {
            PathBuf::from(name)
        } else {
            dir.join(format!("{name}.yaml"))
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ScenarioError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ScenarioError::Parse { source, .. } => ScenarioError::Parse { path, source },
            other => other,
        })
    }

    /// Parses and checks one scenario document.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = serde_yaml_ng::from_str(text).map_err(|source| ScenarioError::Parse {
            path: PathBuf::from("<text>"),
            source,
        })?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Checks what serde cannot: positive rate, known targets, plans that are fault plans.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |problem: String| ScenarioError::Invalid {
            name: self.name.clone(),
            problem,
        };
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 10_000.0) {
            return Err(bad(format!(
                "rate {} must be above 0 and at most 10000",
                self.rate
            )));
        }
        if self.duration.is_zero() {
            return Err(bad("duration must be above 0".into()));
        }
        if let Some(c) = self.expect.min_trace_completeness
            && !(0.0..=1.0).contains(&c)
        {
            return Err(bad(format!("min_trace_completeness {c} must be between 0 and 1")));
        }
        for (i, f) in self.faults.iter().enumerate() {
            let at = format!("fault {} ({:?} {})", i + 1, f.action, f.target);
            match f.action {
                Action::Kill | Action::Stop => {
                    if !PROCESSES.contains(&f.target.as_str()) {
                        return Err(bad(format!("{at}: target must be one of {PROCESSES:?}")));
                    }
                    if f.duration.is_none() {
                        return Err(bad(format!(
                            "{at}: needs `for` (a process left down would leave orders unfinished)"
                        )));
                    }
                }
                Action::FaultPlan => {
                    if !SERVICES.contains(&f.target.as_str()) {
                        return Err(bad(format!("{at}: target must be one of {SERVICES:?}")));
                    }
                    let plan = f
                        .plan
                        .as_ref()
                        .ok_or_else(|| bad(format!("{at}: needs a plan")))?;
                    pizza_servicekit::FaultPlan::from_json(&plan.to_string())
                        .map_err(|e| bad(format!("{at}: {e}")))?;
                }
                Action::Poison => {
                    if !pizza_contracts::topics::ALL.contains(&f.target.as_str()) {
                        return Err(bad(format!(
                            "{at}: target must be one of {:?}",
                            pizza_contracts::topics::ALL
                        )));
                    }
                    if f.count.unwrap_or(0) == 0 {
                        return Err(bad(format!("{at}: needs a count above 0")));
                    }
                }
            }
        }
        Ok(())
    }

    /// The windows during which a fault is active, in seconds since the start, for shading the
    /// chart; an open-ended fault lasts until `end`.
    pub fn fault_windows(&self, end: Duration) -> Vec<(f64, f64, String)> {
        self.faults
            .iter()
            .map(|f| {
                let start = f.at.as_secs_f64();
                let stop = match (f.action, f.duration) {
                    (_, Some(d)) => start + d.as_secs_f64(),
                    (Action::Poison, None) => start + 1.0,
                    (_, None) => end.as_secs_f64().max(start),
                };
                (start, stop, f.label())
            })
            .collect()
    }
}

impl Fault {
    /// A short label: `stop kafka`, `fault-plan kitchen`.
    pub fn label(&self) -> String {
        let action = match self.action {
            Action::Kill => "kill",
            Action::Stop => "stop",
            Action::FaultPlan => "fault-plan",
            Action::Poison => "poison",
        };
        format!("{action} {}", self.target)
    }
}

/// Parses `250ms`, `20s`, `2m`, `1.5s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => text.split_at(i),
        None => return Err(format!("{text:?} needs a unit (ms, s or m)")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: unit must be ms, s or m")),
    };
    if !seconds.is_finite() || !(0.0..=86_400.0).contains(&seconds) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Writes a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.is_zero() && d.as_nanos() != 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

mod human_duration {
    use super::*;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

mod opt_human_duration {
    use super::*;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios")
    }

    #[test]
    fn all_nine_scenario_files_parse_and_are_named_after_their_file() {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir()).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
            let scenario = Scenario::load(&dir(), &stem).unwrap();
            assert_eq!(scenario.name, stem);
            names.push(stem);
        }
        names.sort();
        assert_eq!(
            names,
            [
                "baseline",
                "broken-propagation",
                "collector-down",
                "kafka-outage",
                "kitchen-down",
                "kitchen-errors",
                "order-crash",
                "poison-messages",
                "slow-delivery"
            ]
        );
    }

    #[test]
    fn durations_parse_in_three_units_and_refuse_missing_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("20").is_err());
        assert!(parse_duration("20h").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(format_duration(Duration::from_secs(20)), "20s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn inconsistent_scenarios_are_refused_with_the_reason() {
        let base = "name: x\ndescription: d\nrate: 1\nduration: 10s\n";
        let cases = [
            ("name: x\ndescription: d\nrate: 0\nduration: 10s\n", "rate"),
            (
                &*format!("{base}faults:\n - {{at: 1s, action: kill, target: oven}}\n"),
                "target",
            ),
            (
                &*format!("{base}faults:\n - {{at: 1s, action: fault-plan, target: kitchen}}\n"),
                "plan",
            ),
            (
                &*format!(
                    "{base}faults:\n - {{at: 1s, action: fault-plan, target: kitchen, plan: {{http_error_rate: 3}}}}\n"
                ),
                "between 0 and 1",
            ),
            (
                &*format!("{base}faults:\n - {{at: 1s, action: poison, target: kitchen.events}}\n"),
                "count",
            ),
            (&*format!("{base}speed: 3\n"), "unknown field"),
            (
                &*format!("{base}faults:\n - {{at: 1s, action: kill, target: order}}\n"),
                "needs `for`",
            ),
        ];
        for (text, needle) in cases {
            let err = Scenario::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }

    #[test]
    fn fault_windows_end_after_their_duration_or_at_the_end_of_the_run() {
        let s = Scenario::load(&dir(), "kafka-outage").unwrap();
        assert_eq!(
            s.fault_windows(Duration::from_secs(60)),
            vec![(10.0, 30.0, "stop kafka".to_owned())]
        );
        let s = Scenario::load(&dir(), "broken-propagation").unwrap();
        assert_eq!(s.fault_windows(Duration::from_secs(60))[0].1, 60.0);
    }
}
