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
//!   max_cancelled_share: 0.0      # share (0 to 1) of accepted orders the fault may cancel
//!   max_unexplained_incomplete: 0 # incomplete orders not explained by a killed process
//!   max_spans_dropped: 0          # spans dropped by the services' SDKs and by the Collector
//! faults:
//!   - at: 10s                     # since the first arrival
//!     for: 20s                    # undo the fault after this long (required for kill and stop;
//!                                 # a fault plan without it is cleared when the run is over)
//!     action: stop                # stop | kill | random-kills | fault-plan | poison
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
//! - `random-kills`: `count` SIGKILLs at seeded random times within `for`, each of a service drawn
//!   from `target` (a comma-separated list of `order`, `kitchen`, `delivery`) among those running,
//!   each started again after a pause drawn from `restart_after` (`1s..4s`). `seed` fixes the
//!   schedule, so a run can be repeated ([`Fault::kill_schedule`]); the report lists every kill.
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
    /// The largest share (0 to 1) of accepted orders that may end `cancelled`: what the fault may
    /// legitimately cancel. A shop that stalls after a crash and times orders out fails it.
    pub max_cancelled_share: Option<f64>,
    /// Orders with missing spans or orphans that a killed process does not explain (the spans a
    /// process held when it was killed are the only loss a kill may cause).
    pub max_unexplained_incomplete: Option<u64>,
    /// Spans dropped by the services' SDKs (queue full, export failed) and by the Collector.
    pub max_spans_dropped: Option<u64>,
}

impl Default for Expect {
    fn default() -> Self {
        Self {
            lost: 0,
            duplicated_side_effects: 0,
            min_trace_completeness: None,
            fragmentation: Fragmentation::Any,
            max_cancelled_share: None,
            max_unexplained_incomplete: None,
            max_spans_dropped: None,
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
    /// Records of a `poison` action; kills of a `random-kills` action.
    #[serde(default)]
    pub count: Option<u32>,
    /// `random-kills`: the range the pause before each restart is drawn from.
    #[serde(default, with = "opt_duration_range")]
    pub restart_after: Option<(Duration, Duration)>,
    /// `random-kills`: the seed of the schedule (0 when absent).
    #[serde(default)]
    pub seed: Option<u64>,
}

/// One kill of a `random-kills` fault, as [`Fault::kill_schedule`] plans it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedKill {
    /// When, counted from the first arrival.
    pub at: Duration,
    /// Which service.
    pub target: String,
    /// How long it stays down before it is started again.
    pub restart_after: Duration,
}

/// After a restart, how long a service is left alone before it may be killed again: it has to
/// become ready first (the start waits for `/readyz`), or the kill would hit a process still
/// starting.
pub const RESTART_SETTLE: Duration = Duration::from_secs(5);

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
    /// SIGKILL services at seeded random times, each restarted after a random pause.
    RandomKills,
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
        if let Some(c) = self.expect.max_cancelled_share
            && !(0.0..=1.0).contains(&c)
        {
            return Err(bad(format!("max_cancelled_share {c} must be between 0 and 1")));
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
                Action::RandomKills => {
                    let targets = f.targets();
                    if targets.is_empty() || targets.iter().any(|t| !SERVICES.contains(t)) {
                        return Err(bad(format!(
                            "{at}: target must be a comma-separated list of {SERVICES:?}"
                        )));
                    }
                    if f.duration.is_none_or(|d| d.is_zero()) {
                        return Err(bad(format!("{at}: needs `for`, the window the kills fall in")));
                    }
                    if f.count.unwrap_or(0) == 0 {
                        return Err(bad(format!("{at}: needs a count above 0")));
                    }
                    match f.restart_after {
                        Some((low, high)) if low <= high && high <= Duration::from_secs(600) => {}
                        Some(_) => {
                            return Err(bad(format!(
                                "{at}: restart_after must be `low..high` with low <= high <= 10m"
                            )));
                        }
                        None => return Err(bad(format!("{at}: needs restart_after, e.g. 1s..4s"))),
                    }
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
                    (Action::RandomKills, _) => f
                        .kill_schedule()
                        .iter()
                        .map(|k| (k.at + k.restart_after).as_secs_f64())
                        .fold(start, f64::max),
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
            Action::RandomKills => "random-kills",
        };
        format!("{action} {}", self.target)
    }

    /// The services of a `random-kills` target list.
    pub fn targets(&self) -> Vec<&str> {
        self.target
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// The kills of a `random-kills` fault, in time order (empty for any other action).
    ///
    /// `count` instants are drawn uniformly in `[at, at + for)` from SplitMix64 seeded with `seed`
    /// (the fault plans' generator, so a schedule never changes under a dependency update). At each
    /// one a service is drawn among the targets that are up (started again, and
    /// [`RESTART_SETTLE`] past its restart); if none is, the kill waits for the first one back. Then
    /// the pause before its restart is drawn from `restart_after`.
    pub fn kill_schedule(&self) -> Vec<PlannedKill> {
        let (Action::RandomKills, Some(window), Some(count), Some((low, high))) =
            (self.action, self.duration, self.count, self.restart_after)
        else {
            return Vec::new();
        };
        let targets = self.targets();
        if targets.is_empty() {
            return Vec::new();
        }
        let mut rng = pizza_servicekit::faults::SplitMix64::new(self.seed.unwrap_or(0));
        let mut instants: Vec<Duration> = (0..count)
            .map(|_| self.at + window.mul_f64(rng.next_f64()))
            .collect();
        instants.sort();
        let mut up_at: Vec<Duration> = vec![Duration::ZERO; targets.len()];
        let mut kills = Vec::with_capacity(instants.len());
        for instant in instants {
            let first_back = up_at.iter().copied().min().unwrap_or_default();
            let at = instant.max(first_back);
            let up: Vec<usize> = (0..targets.len()).filter(|&i| up_at[i] <= at).collect();
            let pick = up[(rng.next_u64() % up.len() as u64) as usize];
            let restart_after = low + (high - low).mul_f64(rng.next_f64());
            up_at[pick] = at + restart_after + RESTART_SETTLE;
            kills.push(PlannedKill {
                at,
                target: targets[pick].to_owned(),
                restart_after,
            });
        }
        kills
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

/// Parses `1s..4s` (both ends written as [`parse_duration`] reads them).
pub fn parse_duration_range(text: &str) -> Result<(Duration, Duration), String> {
    let (low, high) = text
        .split_once("..")
        .ok_or_else(|| format!("{text:?} is not a range like 1s..4s"))?;
    Ok((parse_duration(low)?, parse_duration(high)?))
}

mod opt_duration_range {
    use super::*;

    pub(super) fn serialize<S: Serializer>(
        r: &Option<(Duration, Duration)>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match r {
            Some((low, high)) => {
                s.serialize_str(&format!("{}..{}", format_duration(*low), format_duration(*high)))
            }
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<(Duration, Duration)>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| parse_duration_range(&t).map_err(serde::de::Error::custom))
            .transpose()
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
    fn all_ten_scenario_files_parse_and_are_named_after_their_file() {
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
                "crash-soak",
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
            (
                &*format!(
                    "{base}faults:\n - {{at: 1s, for: 10s, action: random-kills, target: \"order, kafka\", count: 2, restart_after: 1s..2s}}\n"
                ),
                "comma-separated",
            ),
            (
                &*format!(
                    "{base}faults:\n - {{at: 1s, for: 10s, action: random-kills, target: order, count: 2, restart_after: 3s..2s}}\n"
                ),
                "low <= high",
            ),
            (
                &*format!(
                    "{base}faults:\n - {{at: 1s, for: 10s, action: random-kills, target: order, count: 2}}\n"
                ),
                "restart_after",
            ),
        ];
        for (text, needle) in cases {
            let err = Scenario::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }

    #[test]
    fn a_kill_schedule_is_fixed_by_its_seed_and_never_kills_a_service_that_is_still_down() {
        let s = Scenario::load(&dir(), "crash-soak").unwrap();
        let fault = &s.faults[0];
        let kills = fault.kill_schedule();
        assert_eq!(kills.len(), fault.count.unwrap() as usize);
        assert_eq!(
            kills,
            fault.kill_schedule(),
            "the same seed gives the same schedule"
        );
        let mut other = fault.clone();
        other.seed = Some(fault.seed.unwrap() + 1);
        assert_ne!(kills, other.kill_schedule(), "another seed, another schedule");
        let (low, high) = fault.restart_after.unwrap();
        let window_end = fault.at + fault.duration.unwrap();
        let mut back: std::collections::HashMap<&str, Duration> = Default::default();
        for (i, k) in kills.iter().enumerate() {
            assert!(fault.targets().contains(&k.target.as_str()), "{k:?}");
            assert!((low..=high).contains(&k.restart_after), "{k:?}");
            assert!(k.at >= fault.at, "{k:?}");
            assert!(i == 0 || kills[i - 1].at <= k.at, "in time order");
            if let Some(up) = back.get(k.target.as_str()) {
                assert!(
                    k.at >= *up,
                    "{} killed again before it was back: {kills:?}",
                    k.target
                );
            }
            back.insert(&k.target, k.at + k.restart_after + RESTART_SETTLE);
        }
        assert!(kills.iter().filter(|k| k.at < window_end).count() >= kills.len() - 1);
        let services: std::collections::HashSet<&str> = kills.iter().map(|k| k.target.as_str()).collect();
        assert!(services.len() >= 2, "kills spread over the services: {kills:?}");
    }

    #[test]
    fn when_every_target_is_down_the_next_kill_waits_for_the_first_one_back() {
        let text = "name: x\ndescription: d\nrate: 1\nduration: 10s\nfaults:\n - {at: 0s, for: 1s, action: random-kills, \
                    target: order, count: 3, restart_after: 2s..2s, seed: 9}\n";
        let s = Scenario::parse(text).unwrap();
        let at: Vec<Duration> = s.faults[0].kill_schedule().iter().map(|k| k.at).collect();
        assert_eq!(at.len(), 3);
        let gap = Duration::from_secs(2) + RESTART_SETTLE;
        assert!(at[1] >= at[0] + gap && at[2] >= at[1] + gap, "{at:?}");
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
