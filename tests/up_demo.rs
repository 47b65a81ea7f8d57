//! `hms up --demo` as a newcomer runs it: on an empty system with NATS not running, it starts
//! NATS, creates the admin, registers its edge, runs the narrated demo to the end and keeps
//! running; `hms demo` then runs again against it (the admin now signs in with TOTP); Ctrl-C
//! stops everything cleanly.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[path = "../edge-agent/tests/support/nats.rs"]
mod nats;
#[path = "support/system.rs"]
mod system;

/// Every line the child prints, as it prints it (and echoed for the test's log).
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("up | {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for_line(
    lines: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    within: Duration,
    wanted: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if wanted(&line) {
                    return line;
                }
            }
            Err(e) => panic!("no such line ({e:?}); printed:\n{}", seen.join("\n")),
        }
    }
}

fn url_after(seen: &[String], label: &str) -> String {
    let line = seen
        .iter()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{}", seen.join("\n")));
    line.split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned()
}

struct Cleanup {
    nats_pid: Option<u32>,
    database: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pid) = self.nats_pid {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        system::drop_database(&self.database);
    }
}

#[test]
fn hms_up_demo_runs_the_whole_tour_then_demo_runs_again_and_ctrl_c_stops_everything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tag = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
    let nats_port = nats::free_port();
    let mut cleanup = Cleanup {
        nats_pid: None,
        database: format!("hms_test_up_{tag}"),
    };
    let env = |command: &mut Command| {
        system::isolate(
            command,
            &data,
            &format!("nats://127.0.0.1:{nats_port}"),
            &cleanup.database,
            &format!("up{tag}"),
        );
    };
    let mut up = Command::new(env!("CARGO_BIN_EXE_hms"));
    up.args(["up", "--demo"]).stdout(Stdio::piped());
    env(&mut up);
    let mut up = up.spawn().unwrap();
    let lines = lines_of(&mut up);
    let mut seen = Vec::new();

    let started = wait_for_line(&lines, &mut seen, Duration::from_secs(60), |l| {
        l.contains("nats") && l.contains("started (pid")
    });
    cleanup.nats_pid = started
        .rsplit_once("pid ")
        .and_then(|(_, p)| p.trim_end_matches(')').parse().ok());
    assert!(cleanup.nats_pid.is_some(), "{started}");
    wait_for_line(&lines, &mut seen, Duration::from_secs(300), |l| {
        l.starts_with("Demo complete") || l.contains("did not hold")
    });
    let text = seen.join("\n");
    assert!(text.contains("Demo complete: every step held"), "{text}");
    for step in 1..=12 {
        assert!(
            text.contains(&format!("[{step}/12]")),
            "step {step} missing:\n{text}"
        );
    }
    assert!(
        text.contains("created the user `admin` with the generated password"),
        "{text}"
    );
    assert!(text.contains("registered the local edge node"), "{text}");
    let password_file = data.join("initial-admin-password");
    let mode = std::fs::metadata(&password_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the kept admin password is its owner's only");
    let totp_file = data.join("demo-admin-totp.uri");
    assert!(
        std::fs::read_to_string(&totp_file)
            .unwrap()
            .starts_with("otpauth://totp/")
    );

    // `hms demo` on its own, against the running system: the admin has TOTP on now.
    let command_url = url_after(&seen, "command service");
    let query_url = url_after(&seen, "query API");
    let mut again = Command::new(env!("CARGO_BIN_EXE_hms"));
    again.args([
        "demo",
        "--command-url",
        &command_url,
        "--query-url",
        &query_url,
    ]);
    env(&mut again);
    let again = again.output().unwrap();
    let printed = String::from_utf8_lossy(&again.stdout);
    println!("{printed}");
    assert!(again.status.success(), "the second demo failed:\n{printed}");
    assert!(
        printed.contains("admin signed in with password and TOTP code"),
        "{printed}"
    );

    // Ctrl-C: every service stops and the process exits 0.
    Command::new("kill")
        .args(["-INT", &up.id().to_string()])
        .status()
        .unwrap();
    wait_for_line(&lines, &mut seen, Duration::from_secs(60), |l| {
        l == "stopped"
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = up.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "hms up did not exit after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "hms up exited with {status}");
}

#[test]
fn hms_up_names_an_unreachable_database_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hms"))
        .arg("up")
        .env("HMS_DATA_DIR", dir.path())
        .env("HMS_DATABASE_URL", "postgres://postgres@127.0.0.2:5432/hms")
        // An operator's error message, not a developer's stack trace, even so.
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Error: PostgreSQL is not reachable at 127.0.0.2:5432"),
        "{err}"
    );
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
}

#[test]
fn hms_up_with_its_stdout_closed_still_says_why_it_stops_and_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_hms"))
        .arg("up")
        .env("HMS_DATA_DIR", dir.path())
        .env("HMS_DATABASE_URL", "postgres://postgres@127.0.0.2:5432/hms")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("PostgreSQL is not reachable at 127.0.0.2:5432"),
        "{err}"
    );
}
