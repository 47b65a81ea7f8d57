//! The `hms` binary as a user runs it.

use std::process::Command;

fn hms(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hms"))
        .args(args)
        .output()
        .expect("the hms binary runs")
}

#[test]
fn hms_commands_lists_every_command_of_the_contract_with_who_may_issue_it() {
    let out = hms(&["commands"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 31);
    let book = text
        .lines()
        .find(|l| l.contains("BookAppointment"))
        .unwrap();
    assert!(book.starts_with("hospital"));
    assert!(book.ends_with("receptionist, doctor, patient"));
    let approve_claim = text.lines().find(|l| l.contains("ApproveClaim")).unwrap();
    assert!(approve_claim.ends_with("insurer"));
}

#[test]
fn a_service_that_is_not_built_yet_says_so_and_fails() {
    let out = hms(&["up", "--demo"]);
    assert!(!out.status.success(), "hms up must not pretend to run");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("not built yet"), "{err}");
}

#[test]
fn an_unknown_subcommand_is_refused_with_usage() {
    let out = hms(&["teleport"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("Usage"));
}
