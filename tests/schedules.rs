//! `newsd schedules check`: the real binary validating real schedule files.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_newsd");

fn check(dir: &std::path::Path, json: bool) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(BIN);
    // No config file: the check runs without one (sources and profiles are then not checked).
    cmd.args(["-c", dir.join("absent.toml").to_str().unwrap(), "schedules", "check", dir.to_str().unwrap(), "--next", "2"]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn valid_files_print_next_fire_times() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("a.toml"),
        "[[job]]\nname = \"morning\"\ncron = \"0 30 8 * * MON-FRI\"\ntimezone = \"America/New_York\"\ntask = \"analyze\"\n",
    )
    .unwrap();
    std::fs::write(tmp.path().join("b.toml"), "[[job]]\nname = \"crawl\"\ncron = \"*/15 * * * *\"\ntask = \"crawl\"\nsources = [\"x\"]\n").unwrap();
    std::fs::write(tmp.path().join(".b.toml.swp"), "not toml at all [[[").unwrap();
    let (code, stdout, stderr) = check(tmp.path(), true);
    assert_eq!(code, Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["ok"], true);
    let jobs = v["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    let morning = jobs.iter().find(|j| j["name"] == "morning").unwrap();
    assert_eq!(morning["timezone"], "America/New_York");
    let next: Vec<chrono::DateTime<chrono::FixedOffset>> =
        morning["next"].as_array().unwrap().iter().map(|t| chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap()).unwrap()).collect();
    assert_eq!(next.len(), 2);
    for t in &next {
        // 08:30 New York time on a weekday (the offset is -04:00 or -05:00 by season).
        assert_eq!(t.format("%H:%M:%S").to_string(), "08:30:00", "{t}");
        assert!(t.offset().local_minus_utc() == -4 * 3600 || t.offset().local_minus_utc() == -5 * 3600, "{t}");
        assert!(!matches!(chrono::Datelike::weekday(t), chrono::Weekday::Sat | chrono::Weekday::Sun), "{t}");
    }
    let crawl = jobs.iter().find(|j| j["name"] == "crawl").unwrap();
    assert_eq!(crawl["cron"], "0 */15 * * * *");
    assert_eq!(crawl["task"]["sources"][0], "x");
    let (code, stdout, _) = check(tmp.path(), false);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("2 jobs in 2 files, valid") && stdout.contains("next "), "{stdout}");
}

#[test]
fn invalid_files_are_reported_with_file_line_and_problem() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("a.toml"), "[[job]]\nname = \"x\"\ncron = \"0 * * * * *\"\ntask = \"embed\"\n").unwrap();
    std::fs::write(tmp.path().join("b.toml"), "# dup\n[[job]]\nname = \"x\"\ncron = \"0 * * * * *\"\ntask = \"prune\"\n").unwrap();
    std::fs::write(tmp.path().join("c.toml"), "[[job]]\nname = \"y\"\ncron = \"0 * * * * *\"\ntask = \"embed\"\nretries = 3\n").unwrap();
    std::fs::write(tmp.path().join("d.toml"), "[[job]]\nname = \"z\"\ncron = \"0 * * * * *\"\ntask = \"summon\"\n").unwrap();
    std::fs::write(tmp.path().join("e.toml"), "[[job]\nname = \"w\"\n").unwrap();
    let (code, stdout, _) = check(tmp.path(), true);
    assert_eq!(code, Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["ok"], false);
    let errors: Vec<String> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}:{}: {}", std::path::Path::new(e["path"].as_str().unwrap()).file_name().unwrap().to_string_lossy(), e["line"], e["message"].as_str().unwrap()))
        .collect();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(errors.iter().any(|e| e.starts_with("b.toml:3: ") && e.contains("duplicate job name \"x\"") && e.contains("a.toml:2")), "{errors:#?}");
    assert!(errors.iter().any(|e| e.starts_with("c.toml:5: ") && e.contains("unknown field `retries`")), "{errors:#?}");
    assert!(errors.iter().any(|e| e.starts_with("d.toml:4: ") && e.contains("unknown task \"summon\"")), "{errors:#?}");
    assert!(errors.iter().any(|e| e.starts_with("e.toml:1: ")), "{errors:#?}");
    let (code, _, stderr) = check(tmp.path(), false);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("c.toml:5: ") && stderr.contains("unknown field `retries`"), "{stderr}");
}

#[test]
fn test_hooks_are_refused_in_a_build_without_the_feature_and_empty_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("a.toml"), "[[job]]\nname = \"p\"\ncron = \"* * * * * *\"\ntask = \"_test_panic\"\n").unwrap();
    let (code, stdout, stderr) = check(tmp.path(), false);
    if cfg!(feature = "test-hooks") {
        assert_eq!(code, Some(0), "{stdout}{stderr}");
    } else {
        assert_eq!(code, Some(1), "{stdout}");
        assert!(stderr.contains("a.toml:4: ") && stderr.contains("unknown task \"_test_panic\""), "{stderr}");
        assert!(!stderr.contains("_test_sleep"), "test hooks are not offered: {stderr}");
    }
    // A file with no jobs is refused unless it says `job = []`.
    std::fs::write(tmp.path().join("a.toml"), "# truncated\n").unwrap();
    let (code, _, stderr) = check(tmp.path(), false);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("a.toml:1: ") && stderr.contains("no jobs") && stderr.contains("job = []"), "{stderr}");
    std::fs::write(tmp.path().join("a.toml"), "job = []\n").unwrap();
    let (code, stdout, stderr) = check(tmp.path(), false);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("0 jobs in 1 files, valid"), "{stdout}");
}
