//! Schedule files: `schedules/*.toml`, each holding `[[job]]` tables (format documented at the top of
//! `schedules/default.toml`).
//!
//! The whole directory is one schedule: [`load_dir`] reads every file, validates every job (TOML syntax, unknown
//! fields, cron expression, time zone, task and its parameters, durations, duplicate names across files) and
//! either returns the complete [`ScheduleSet`] or every error found, each naming file, line and problem. The
//! daemon applies only a valid set, as the [`diff`] against the running one; an invalid edit is refused whole.
//!
//! "No jobs" must be said: a file with no `job` key at all (an empty file, or comments only: what a truncated or
//! half-written file looks like) is refused, and so is a directory with no schedule file. A file that means to
//! hold no jobs says `job = []`.

pub mod fire;
pub mod runner;
pub mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::{line_col, Config};
use crate::tasks::{is_task, task_names, TaskSpec};

/// One problem in one schedule file.
#[derive(Debug, Clone, thiserror::Error, Serialize)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ScheduleError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

/// Every problem found in a schedule directory (a set is refused when there is at least one).
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleErrors(pub Vec<ScheduleError>);

impl fmt::Display for ScheduleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ScheduleErrors {}

/// What to do when the previous run is still running at the next fire time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Skip the tick (recorded as a `skipped` run).
    #[default]
    Skip,
    /// Run once more after the current run ends (at most one queued; further ticks are skipped).
    Queue,
}

/// What to do at start about fire times that passed while the daemon was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    #[default]
    Skip,
    /// Run once at start when at least one fire time passed since the job's last recorded run.
    RunOnce,
}

/// Where a job is defined. Always equal to any other: moving a job to another file or line changes nothing about
/// the job, so [`JobSpec`]'s derived equality (used by [`diff`]) ignores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DefinedAt {
    pub file: PathBuf,
    pub line: usize,
}

impl PartialEq for DefinedAt {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// A validated job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    /// Six-field cron expression (seconds first) as tokio-cron-scheduler reads it.
    pub cron: String,
    #[serde(serialize_with = "ser_tz", deserialize_with = "de_tz")]
    pub timezone: chrono_tz::Tz,
    pub task: TaskSpec,
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub overlap: Overlap,
    #[serde(with = "humantime_serde")]
    pub jitter: Duration,
    pub missed: Missed,
    #[serde(flatten)]
    pub defined: DefinedAt,
}

/// Cron times are whole seconds (croner keeps the start time's fraction otherwise).
fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

fn ser_tz<S: serde::Serializer>(tz: &chrono_tz::Tz, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(tz.name())
}

fn de_tz<'de, D: serde::Deserializer<'de>>(d: D) -> Result<chrono_tz::Tz, D::Error> {
    let name = String::deserialize(d)?;
    name.parse().map_err(|_| serde::de::Error::custom(format!("unknown time zone {name:?}")))
}

impl JobSpec {
    /// The parsed cron expression (validated at load, so this cannot fail for a loaded job).
    pub fn schedule(&self) -> Cron {
        parse_cron(&self.cron).expect("validated at load").1
    }

    /// The next `n` fire times strictly after `after`, in the job's time zone.
    pub fn next_fires(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<chrono_tz::Tz>> {
        self.schedule().iter_after(whole_second(after).with_timezone(&self.timezone)).take(n).collect()
    }

    /// The fire time a tick seen at `now` belongs to: the latest one at or before `now` (plus 50 ms for clock
    /// granularity), looking back at most five minutes. Every node computes the same time for the same tick, so the
    /// time names the fire cluster-wide (a trigger later than the cron's period maps to the next fire time, which
    /// the runner then does not fire twice).
    pub fn fire_time_for_tick(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let limit = now + chrono::Duration::milliseconds(50);
        self.schedule()
            .iter_after(whole_second(now - chrono::Duration::minutes(5)).with_timezone(&self.timezone))
            .map(|t| t.with_timezone(&Utc))
            .take_while(|t| *t <= limit)
            .last()
    }

    /// The latest fire time in `(after, before]`, if any.
    pub fn last_fire_between(&self, after: DateTime<Utc>, before: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let latest_from = |from: DateTime<Utc>| {
            self.schedule()
                .iter_after(whole_second(from).with_timezone(&self.timezone))
                .map(|t| t.with_timezone(&Utc))
                .take_while(|t| *t <= before)
                .last()
        };
        // The last two days first (a frequent cron after a long gap would be a long walk from `after`); a cron that
        // did not fire in them is sparse, so walking from `after` is short.
        let recent = before - chrono::Duration::days(2);
        if recent > after {
            if let Some(t) = latest_from(recent) {
                return Some(t);
            }
        }
        latest_from(after)
    }

    /// Whether a fire time lies in `(after, before]`.
    pub fn fired_between(&self, after: DateTime<Utc>, before: DateTime<Utc>) -> bool {
        match self.schedule().find_next_occurrence(&whole_second(after).with_timezone(&self.timezone), false) {
            Ok(t) => t.with_timezone(&Utc) <= before,
            Err(_) => false,
        }
    }

    /// `file:line` where the job is defined.
    pub fn location(&self) -> String {
        format!("{}:{}", self.defined.file.display(), self.defined.line)
    }
}

/// A whole schedule directory, by job name.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScheduleSet {
    pub jobs: BTreeMap<String, JobSpec>,
    pub files: Vec<PathBuf>,
}

/// What changed between two sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScheduleDiff {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl ScheduleDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

impl fmt::Display for ScheduleDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no changes");
        }
        let mut parts = Vec::new();
        for (label, names) in [("added", &self.added), ("changed", &self.changed), ("removed", &self.removed)] {
            if !names.is_empty() {
                parts.push(format!("{label}: {}", names.join(", ")));
            }
        }
        f.write_str(&parts.join("; "))
    }
}

/// Jobs in `new` not in `old`, in both but different, in `old` not in `new`.
pub fn diff(old: &ScheduleSet, new: &ScheduleSet) -> ScheduleDiff {
    let mut d = ScheduleDiff::default();
    for (name, job) in &new.jobs {
        match old.jobs.get(name) {
            None => d.added.push(name.clone()),
            Some(o) if o != job => d.changed.push(name.clone()),
            Some(_) => {}
        }
    }
    d.removed = old.jobs.keys().filter(|n| !new.jobs.contains_key(*n)).cloned().collect();
    d
}

/// Parses a cron expression the way the scheduler does: six fields (seconds first) or five (seconds = 0), or an
/// `@nickname`; day-of-month and day-of-week must both match when both are restricted. Returns the six-field
/// form and the parsed schedule.
pub fn parse_cron(expr: &str) -> Result<(String, Cron), String> {
    let expr = expr.trim();
    let fields = expr.split_whitespace().count();
    let normalized = if expr.starts_with('@') {
        expr.to_string()
    } else {
        match fields {
            5 => format!("0 {}", expr.split_whitespace().collect::<Vec<_>>().join(" ")),
            6 => expr.split_whitespace().collect::<Vec<_>>().join(" "),
            n => return Err(format!("cron expression {expr:?} has {n} fields; expected 6 (sec min hour dom mon dow) or 5 (min hour dom mon dow)")),
        }
    };
    let cron = CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(&normalized)
        .map_err(|e| format!("invalid cron expression {expr:?}: {e}"))?;
    if cron.find_next_occurrence(&Utc::now(), false).is_err() {
        return Err(format!("cron expression {expr:?} never fires"));
    }
    Ok((normalized, cron))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// None when the file has no `job` key at all (refused: see the module doc); `job = []` is Some(empty).
    #[serde(default)]
    job: Option<Vec<RawJob>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Spanned<String>,
    cron: Spanned<String>,
    #[serde(default)]
    timezone: Option<Spanned<String>>,
    task: Spanned<String>,
    // Task parameters: read here for their lines, then handed with `task` to `TaskSpec`'s Deserialize, which
    // decides which task takes which (a parameter of a new task is added here and to its variant).
    #[serde(default)]
    sources: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    profile: Option<Spanned<String>>,
    /// `_test_sleep` only (feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    #[serde(default)]
    duration: Option<Spanned<String>>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    overlap: Overlap,
    #[serde(default)]
    jitter: Option<Spanned<String>>,
    #[serde(default)]
    missed: Missed,
}

fn yes() -> bool {
    true
}

/// Timeout of a job that sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

fn is_schedule_file(p: &Path) -> bool {
    let Some(name) = p.file_name().and_then(|n| n.to_str()) else { return false };
    !name.starts_with('.') && name.ends_with(".toml") && p.is_file()
}

/// Reads and validates every `*.toml` file in `dir` (hidden files skipped). With `config`, crawl sources and
/// analysis profiles are checked against it.
pub fn load_dir(dir: &Path, config: Option<&Config>) -> Result<ScheduleSet, ScheduleErrors> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        ScheduleErrors(vec![ScheduleError {
            path: dir.to_path_buf(),
            line: None,
            message: format!("cannot read schedules directory: {e}"),
        }])
    })?;
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| is_schedule_file(p)).collect();
    files.sort();
    if files.is_empty() {
        return Err(ScheduleErrors(vec![ScheduleError {
            path: dir.to_path_buf(),
            line: None,
            message: "no schedule files (*.toml): refused, since it would stop every job; to run no jobs, keep a file containing `job = []`".into(),
        }]));
    }
    let mut texts = Vec::new();
    let mut errors = Vec::new();
    for f in &files {
        match std::fs::read_to_string(f) {
            Ok(t) => texts.push((f.clone(), t)),
            Err(e) => errors.push(ScheduleError { path: f.clone(), line: None, message: format!("cannot read: {e}") }),
        }
    }
    let set = load_texts(texts.iter().map(|(p, t)| (p.as_path(), t.as_str())), config);
    match set {
        Ok(mut s) if errors.is_empty() => {
            s.files = files;
            Ok(s)
        }
        Ok(_) => Err(ScheduleErrors(errors)),
        Err(ScheduleErrors(more)) => {
            errors.extend(more);
            Err(ScheduleErrors(errors))
        }
    }
}

/// Validates schedule texts (path, contents) as one set.
pub fn load_texts<'a>(
    files: impl IntoIterator<Item = (&'a Path, &'a str)>,
    config: Option<&Config>,
) -> Result<ScheduleSet, ScheduleErrors> {
    let mut set = ScheduleSet::default();
    let mut errors = Vec::new();
    for (path, text) in files {
        set.files.push(path.to_path_buf());
        let raw: RawFile = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                let line = e.span().map(|s| line_col(text, s.start).0);
                errors.push(ScheduleError { path: path.to_path_buf(), line, message: e.message().trim().to_string() });
                continue;
            }
        };
        let Some(jobs) = raw.job else {
            errors.push(ScheduleError {
                path: path.to_path_buf(),
                line: Some(1),
                message: "no jobs in this file (empty, or comments only): refused, since it would stop every job it held; write `job = []` to mean a file with no jobs".into(),
            });
            continue;
        };
        for job in jobs {
            match validate_job(job, path, text, config) {
                Ok(spec) => {
                    if let Some(prev) = set.jobs.get(&spec.name) {
                        errors.push(ScheduleError {
                            path: path.to_path_buf(),
                            line: Some(spec.defined.line),
                            message: format!("duplicate job name {:?} (also defined at {})", spec.name, prev.location()),
                        });
                    } else {
                        set.jobs.insert(spec.name.clone(), spec);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(ScheduleErrors(errors))
    }
}

fn parse_duration(s: &Spanned<String>, what: &str, err: &dyn Fn(&Spanned<String>, String) -> ScheduleError) -> Result<Duration, ScheduleError> {
    humantime::parse_duration(s.get_ref().trim())
        .map_err(|e| err(s, format!("{what}: invalid duration {:?}: {e} (examples: \"30s\", \"10m\", \"1h 30m\")", s.get_ref())))
}

fn validate_job(job: RawJob, path: &Path, text: &str, config: Option<&Config>) -> Result<JobSpec, ScheduleError> {
    let line_of = |start: usize| line_col(text, start).0;
    let err = |s: &Spanned<String>, message: String| ScheduleError { path: path.to_path_buf(), line: Some(line_of(s.span().start)), message };
    let at = |start: usize, message: String| ScheduleError { path: path.to_path_buf(), line: Some(line_of(start)), message };
    let name = job.name.get_ref().trim().to_string();
    let job_line = line_of(job.name.span().start);
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) || name.starts_with('.') {
        return Err(err(&job.name, format!("job name {:?} must be non-empty and use only letters, digits, '-', '_' and '.'", job.name.get_ref())));
    }
    let ctx = |m: String| format!("job {name:?}: {m}");
    let (cron, _) = parse_cron(job.cron.get_ref()).map_err(|m| err(&job.cron, ctx(m)))?;
    let timezone = match &job.timezone {
        None => chrono_tz::Tz::UTC,
        Some(tz) => tz.get_ref().trim().parse::<chrono_tz::Tz>().map_err(|_| {
            err(tz, ctx(format!("unknown time zone {:?} (use an IANA name such as \"UTC\" or \"Europe/London\")", tz.get_ref())))
        })?,
    };
    let task_name = job.task.get_ref().trim();
    if !is_task(task_name) {
        return Err(err(&job.task, ctx(format!("unknown task {task_name:?} (expected one of: {})", task_names().join(", ")))));
    }
    // The task and its parameters go through `TaskSpec`'s Deserialize; errors point at the parameter they name.
    let mut table = toml::Table::new();
    table.insert("task".into(), toml::Value::String(task_name.to_string()));
    let mut params: Vec<(&str, usize)> = Vec::new();
    let mut put = |key: &'static str, value: toml::Value, start: usize| {
        table.insert(key.into(), value);
        params.push((key, start));
    };
    if let Some(s) = &job.sources {
        put("sources", toml::Value::Array(s.get_ref().iter().map(|x| toml::Value::String(x.clone())).collect()), s.span().start);
    }
    if let Some(p) = &job.profile {
        put("profile", toml::Value::String(p.get_ref().trim().to_string()), p.span().start);
    }
    #[cfg(feature = "test-hooks")]
    if let Some(d) = &job.duration {
        put("duration", toml::Value::String(d.get_ref().trim().to_string()), d.span().start);
    }
    let task: TaskSpec = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| {
        let msg = e.message().trim().to_string();
        match params.iter().find(|(k, _)| msg.contains(&format!("`{k}`"))) {
            Some((k, start)) if msg.starts_with("unknown field") => {
                at(*start, ctx(format!("`{k}` is not a parameter of task {task_name:?}")))
            }
            Some((_, start)) => at(*start, ctx(format!("task {task_name:?}: {msg}"))),
            None => err(&job.task, ctx(format!("task {task_name:?}: {msg}"))),
        }
    })?;
    match &task {
        TaskSpec::Crawl { sources } => {
            if let (Some(cfg), Some(sp)) = (config, &job.sources) {
                for s in sources {
                    if cfg.source(s).is_none() {
                        return Err(at(sp.span().start, ctx(format!("unknown source {s:?} (not in {})", cfg.path.display()))));
                    }
                }
            }
        }
        TaskSpec::Analyze { profile: Some(p) } => {
            if let (Some(cfg), Some(sp)) = (config, &job.profile) {
                // WIRE: if profiles move out of the config file, check them where they are loaded from.
                if !cfg.analysis.profiles.iter().any(|x| &x.name == p) {
                    return Err(err(sp, ctx(format!("unknown analysis profile {p:?} (not in {})", cfg.path.display()))));
                }
            }
        }
        _ => {}
    }
    let timeout = match &job.timeout {
        None => DEFAULT_TIMEOUT,
        Some(t) => parse_duration(t, &ctx("timeout".into()), &err)?,
    };
    if timeout.is_zero() {
        return Err(err(job.timeout.as_ref().unwrap_or(&job.name), ctx("timeout must be longer than 0s".into())));
    }
    let jitter = match &job.jitter {
        None => Duration::ZERO,
        Some(j) => parse_duration(j, &ctx("jitter".into()), &err)?,
    };
    Ok(JobSpec {
        name,
        cron,
        timezone,
        task,
        enabled: job.enabled,
        timeout,
        overlap: job.overlap,
        jitter,
        missed: job.missed,
        defined: DefinedAt { file: path.to_path_buf(), line: job_line },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<ScheduleSet, String> {
        load_texts([(Path::new("s/a.toml"), text)], None).map_err(|e| e.to_string())
    }

    #[test]
    fn a_tick_is_named_by_its_cron_time_and_a_missed_gap_by_its_latest() {
        let set = one("[[job]]\nname = \"q\"\ncron = \"0 */15 * * * *\"\ntask = \"notify\"\n").unwrap();
        let j = &set.jobs["q"];
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        // A trigger on time, late, or a hair early names the same fire.
        for seen in ["2026-01-01T10:15:00Z", "2026-01-01T10:15:07.9Z", "2026-01-01T10:14:59.97Z"] {
            assert_eq!(j.fire_time_for_tick(t(seen)), Some(t("2026-01-01T10:15:00Z")), "{seen}");
        }
        // More than five minutes after the last fire time and not at the next: no fire time (the runner then names
        // the tick by its second).
        assert_eq!(j.fire_time_for_tick(t("2026-01-01T10:14:59Z")), None);
        // The latest fire in a gap (what a missed run is claimed under); none in a gap without one.
        assert_eq!(j.last_fire_between(t("2026-01-01T09:01:00Z"), t("2026-01-01T10:20:00Z")), Some(t("2026-01-01T10:15:00Z")));
        assert_eq!(j.last_fire_between(t("2026-01-01T10:16:00Z"), t("2026-01-01T10:29:00Z")), None);
        // Over a long gap the search stays short and exact.
        assert_eq!(j.last_fire_between(t("2020-01-01T00:00:00Z"), t("2026-01-01T10:20:00Z")), Some(t("2026-01-01T10:15:00Z")));
        let yearly = one("[[job]]\nname = \"y\"\ncron = \"0 0 0 1 1 *\"\ntask = \"notify\"\n").unwrap();
        assert_eq!(yearly.jobs["y"].last_fire_between(t("2023-06-01T00:00:00Z"), t("2026-03-01T00:00:00Z")), Some(t("2026-01-01T00:00:00Z")));
    }

    const GOOD: &str = r#"
[[job]]
name = "crawl-news"
cron = "0 */15 * * * *"
timezone = "Europe/London"
task = "crawl"
sources = ["bbc"]
timeout = "10m"
overlap = "queue"
jitter = "30s"
missed = "run_once"

[[job]]
name = "digest"
cron = "0 18 * * 1-5"
task = "analyze"
profile = "evening"
"#;

    #[test]
    fn parses_a_good_file() {
        let set = one(GOOD).unwrap();
        let j = &set.jobs["crawl-news"];
        assert_eq!(j.timezone, chrono_tz::Europe::London);
        assert_eq!(j.task, TaskSpec::Crawl { sources: vec!["bbc".into()] });
        assert_eq!(j.timeout, Duration::from_secs(600));
        assert_eq!(j.overlap, Overlap::Queue);
        assert_eq!(j.missed, Missed::RunOnce);
        assert_eq!(j.defined.line, 3);
        let d = &set.jobs["digest"];
        assert_eq!(d.cron, "0 0 18 * * 1-5", "five fields get a seconds field");
        assert_eq!(d.timeout, DEFAULT_TIMEOUT);
        assert_eq!(d.defined.line, 14);
        let t0 = "2025-06-06T12:00:00.250Z".parse::<DateTime<Utc>>().unwrap(); // a Friday
        let next: Vec<String> = d.next_fires(t0, 2).iter().map(|t| t.to_rfc3339()).collect();
        assert_eq!(next, ["2025-06-06T18:00:00+00:00", "2025-06-09T18:00:00+00:00"]);
        // London is UTC+1 in June: 12:15 local is 11:15Z.
        let n = j.next_fires("2025-06-06T11:01:00Z".parse().unwrap(), 1)[0].with_timezone(&Utc);
        assert_eq!(n.to_rfc3339(), "2025-06-06T11:15:00+00:00");
        assert!(j.fired_between("2025-06-06T11:01:00Z".parse().unwrap(), "2025-06-06T11:20:00Z".parse().unwrap()));
        assert!(!j.fired_between("2025-06-06T11:01:00Z".parse().unwrap(), "2025-06-06T11:14:00Z".parse().unwrap()));
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let cases = [
            ("[[job]]\nname = \"a\"\ncron = \"0 61 * * * *\"\ntask = \"crawl\"\n", "s/a.toml:3:", "invalid cron"),
            ("[[job]]\nname = \"a\"\ncron = \"* * *\"\ntask = \"crawl\"\n", "s/a.toml:3:", "3 fields"),
            ("[[job]]\nname = \"a\"\ncron = \"0 * * * * *\"\ntask = \"crawll\"\n", "s/a.toml:4:", "unknown task \"crawll\""),
            ("[[job]]\nname = \"a\"\ncron = \"0 * * * * *\"\ntask = \"crawl\"\ncolour = 1\n", "s/a.toml:5:", "unknown field `colour`"),
            ("[[job]]\nname = \"a\"\ncron = \"0 * * * * *\n", "s/a.toml:3:", ""),
            ("[[job]]\nname = \"a\"\ncron = \"0 * * * * *\"\ntask = \"embed\"\ntimezone = \"Mars/Olympus\"\n", "s/a.toml:5:", "unknown time zone"),
            ("[[job]]\nname = \"a\"\ncron = \"0 * * * * *\"\ntask = \"embed\"\nsources = [\"x\"]\n", "s/a.toml:5:", "not a parameter"),
            ("[[job]]\nname = \"a\"\ncron = \"0 * * * * *\"\ntask = \"embed\"\n\ntimeout = \"5 parsecs\"\n", "s/a.toml:6:", "invalid duration"),
            ("[[job]]\nname = \"a\"\ncron = \"0 * * * * *\"\ntask = \"embed\"\noverlap = \"sometimes\"\n", "s/a.toml:5:", "unknown variant"),
            ("[[job]]\nname = \"a\"\ncron = \"0 0 0 30 2 *\"\ntask = \"embed\"\n", "s/a.toml:3:", "never fires"),
        ];
        for (text, prefix, needle) in cases {
            let e = one(text).unwrap_err();
            assert!(e.starts_with(prefix) && e.contains(needle), "{text:?}\n=> {e}");
        }
    }

    #[test]
    fn a_file_without_jobs_is_refused_unless_it_says_job_is_empty() {
        for text in ["", "\n\n", "# header comments only, as a truncated file may be\n# name = \"x\"\n"] {
            let e = one(text).unwrap_err();
            assert!(e.starts_with("s/a.toml:1: ") && e.contains("no jobs") && e.contains("job = []"), "{text:?} => {e}");
        }
        let set = one("# this file holds no jobs\njob = []\n").unwrap();
        assert!(set.jobs.is_empty());
        // With other files: the empty one is still refused, naming it.
        let good = "[[job]]\nname = \"x\"\ncron = \"0 * * * * *\"\ntask = \"embed\"\n";
        let e = load_texts([(Path::new("a.toml"), good), (Path::new("b.toml"), "")], None).unwrap_err().to_string();
        assert!(e.starts_with("b.toml:1: "), "{e}");
    }

    #[test]
    fn a_directory_without_schedule_files_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".hidden.toml"), "job = []").unwrap();
        let e = load_dir(dir.path(), None).unwrap_err().to_string();
        assert!(e.contains("no schedule files") && e.contains("job = []"), "{e}");
        std::fs::write(dir.path().join("none.toml"), "job = []").unwrap();
        assert!(load_dir(dir.path(), None).unwrap().jobs.is_empty());
    }

    #[test]
    fn task_parameters_go_through_the_task_enum() {
        let job = |task: &str, extra: &str| format!("[[job]]\nname = \"a\"\ncron = \"0 * * * * *\"\ntask = \"{task}\"\n{extra}");
        assert_eq!(one(&job("prune", "")).unwrap().jobs["a"].task, TaskSpec::Prune {});
        assert_eq!(one(&job("crawl", "")).unwrap().jobs["a"].task, TaskSpec::Crawl { sources: vec![] });
        assert_eq!(
            one(&job("analyze", "profile = \" evening \"\n")).unwrap().jobs["a"].task,
            TaskSpec::Analyze { profile: Some("evening".into()) }
        );
        let e = one(&job("notify", "\nprofile = \"x\"\n")).unwrap_err();
        assert!(e.starts_with("s/a.toml:6: ") && e.contains("`profile` is not a parameter of task \"notify\""), "{e}");
        // The names users see come from the enum, test hooks left out.
        assert_eq!(task_names(), ["crawl", "embed", "reembed", "analyze", "notify", "prune", "reindex"]);
        assert_eq!(TaskSpec::Reembed {}.to_string(), "reembed");
    }

    #[test]
    fn test_hooks_are_tasks_only_in_a_build_with_the_feature() {
        let text = "[[job]]\nname = \"p\"\ncron = \"0 * * * * *\"\ntask = \"_test_panic\"\n";
        let got = one(text);
        if cfg!(feature = "test-hooks") {
            assert_eq!(got.unwrap().jobs["p"].task.name(), "_test_panic");
        } else {
            let e = got.unwrap_err();
            assert!(e.starts_with("s/a.toml:4: ") && e.contains("unknown task \"_test_panic\""), "{e}");
        }
    }

    #[test]
    fn every_field_but_the_location_counts_as_a_change() {
        let base = one(GOOD).unwrap();
        for (from, to) in [
            ("sources = [\"bbc\"]", "sources = [\"bbc\", \"cnn\"]"),
            ("missed = \"run_once\"", "missed = \"skip\""),
            ("overlap = \"queue\"", "overlap = \"skip\""),
            ("timeout = \"10m\"", "timeout = \"11m\""),
            ("timezone = \"Europe/London\"", "timezone = \"Europe/Paris\""),
            ("task = \"crawl\"\nsources = [\"bbc\"]", "task = \"crawl\""),
        ] {
            let edited = one(&GOOD.replace(from, to)).unwrap();
            assert_eq!(diff(&base, &edited).changed, ["crawl-news"], "{from} -> {to}");
        }
    }

    #[test]
    fn a_job_round_trips_through_json_as_the_daemon_records_it() {
        let set = one(GOOD).unwrap();
        let jobs: Vec<&JobSpec> = set.jobs.values().collect();
        let back: Vec<JobSpec> = serde_json::from_str(&serde_json::to_string(&jobs).unwrap()).unwrap();
        assert_eq!(back.iter().collect::<Vec<_>>(), jobs);
        assert_eq!(back[0].location(), jobs[0].location());
    }

    #[test]
    fn duplicate_names_across_files_are_refused() {
        let a = "[[job]]\nname = \"x\"\ncron = \"0 * * * * *\"\ntask = \"embed\"\n";
        let b = "\n\n[[job]]\nname = \"x\"\ncron = \"0 * * * * *\"\ntask = \"prune\"\n";
        let e = load_texts([(Path::new("a.toml"), a), (Path::new("b.toml"), b)], None).unwrap_err().to_string();
        assert!(e.starts_with("b.toml:4:") && e.contains("duplicate job name \"x\"") && e.contains("a.toml:2"), "{e}");
    }

    #[test]
    fn unknown_source_is_refused_with_a_config() {
        let cfg = Config::from_toml("[[sources]]\nname = \"bbc\"\nurl = \"http://x/feed\"\n", Path::new("newsd.toml")).unwrap();
        let text = "[[job]]\nname = \"c\"\ncron = \"0 * * * * *\"\ntask = \"crawl\"\nsources = [\"bbc\", \"cnn\"]\n";
        let e = load_texts([(Path::new("a.toml"), text)], Some(&cfg)).unwrap_err().to_string();
        assert!(e.starts_with("a.toml:5:") && e.contains("unknown source \"cnn\""), "{e}");
        let ok = "[[job]]\nname = \"c\"\ncron = \"0 * * * * *\"\ntask = \"crawl\"\nsources = [\"bbc\"]\n";
        assert!(load_texts([(Path::new("a.toml"), ok)], Some(&cfg)).is_ok());
    }

    #[test]
    fn diff_reports_added_changed_removed() {
        let old = one(GOOD).unwrap();
        let mut new_text = GOOD.replace("jitter = \"30s\"", "jitter = \"10s\"").replace("name = \"digest\"", "name = \"digest2\"");
        new_text.push_str("\n[[job]]\nname = \"p\"\ncron = \"@daily\"\ntask = \"prune\"\n");
        let new = one(&new_text).unwrap();
        let d = diff(&old, &new);
        assert_eq!(d.added, ["digest2", "p"]);
        assert_eq!(d.changed, ["crawl-news"]);
        assert_eq!(d.removed, ["digest"]);
        assert_eq!(d.to_string(), "added: digest2, p; changed: crawl-news; removed: digest");
        // Moving a job to another file (other line) is no change.
        let moved = load_texts([(Path::new("other.toml"), &*format!("\n\n{GOOD}"))], None).unwrap();
        assert!(diff(&old, &moved).is_empty());
    }

    #[test]
    fn shipped_default_schedule_is_valid_with_the_shipped_config() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let cfg = Config::load(&root.join("newsd.toml")).unwrap();
        let set = load_dir(&root.join("schedules"), Some(&cfg)).unwrap();
        assert!(set.jobs.values().any(|j| matches!(j.task, TaskSpec::Crawl { .. })));
        assert!(set.jobs.values().any(|j| j.task == TaskSpec::Embed {}));
        // Each analysis job names its own profile, and the profile exists in the shipped config.
        let profiles: Vec<_> = set
            .jobs
            .values()
            .filter_map(|j| match &j.task {
                TaskSpec::Analyze { profile } => Some(profile.clone().expect("analysis job names its profile")),
                _ => None,
            })
            .collect();
        assert_eq!(profiles.len(), 2);
        assert_ne!(profiles[0], profiles[1]);
        assert!(profiles.iter().all(|p| cfg.analysis.profiles.iter().any(|c| &c.name == p)));
    }
}
