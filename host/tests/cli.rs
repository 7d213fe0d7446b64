//! The `golioth-sync` binary's command line as a person meets it: `--help` and `--version` on the
//! binary and each command answer and exit 0 without starting anything, and a wrong flag prints
//! the usage (no backtrace, no `Error:` debug dump) and exits with 2.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn golioth_sync(args: &[&str]) -> Output {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_golioth-sync"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap_or_else(|e| panic!("golioth-sync {args:?}: {e}"));
    // `up --help` must not start the system (which takes seconds and never returns).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "golioth-sync {args:?} took {:?}",
        started.elapsed()
    );
    out
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

#[test]
fn help_and_version_answer_on_the_binary_and_every_command() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["help"],
        &["serve", "--help"],
        &["migrate", "--help"],
        &["rotate-keys", "--help"],
        &["up", "--help"],
    ] {
        let o = golioth_sync(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
        let out = text(&o.stdout);
        assert!(out.contains("Usage: golioth-sync"), "{args:?}: {out}");
    }
    let serve = text(&golioth_sync(&["serve", "--help"]).stdout);
    for flag in ["--listen", "--threads", "--tick-seconds", "--manifest"] {
        assert!(serve.contains(flag), "{serve}");
    }
    for args in [&["--version"][..], &["-V"], &["up", "--version"]] {
        let o = golioth_sync(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert!(
            text(&o.stdout).contains(env!("CARGO_PKG_VERSION")),
            "{args:?}: {}",
            text(&o.stdout)
        );
    }
}

#[test]
fn usage_errors_print_the_usage_and_exit_2() {
    // A wrong flag, command or missing argument: the usage. A wrong value: what is wrong with it
    // and where the help is.
    for (args, says) in [
        (&["--bogus"][..], "Usage: golioth-sync"),
        (&[], "Usage: golioth-sync"),
        (&["frobnicate"], "Usage: golioth-sync"),
        (
            &["serve", "--listen"],
            "a value is required for '--listen <ADDR>'",
        ),
        (&["up", "--nope"], "Usage: golioth-sync up"),
        (
            &["migrate"],
            "Usage: golioth-sync migrate --database-url <URL>",
        ),
        (
            &["serve", "--threads", "none"],
            "invalid value 'none' for '--threads <N>'",
        ),
        (&["serve", "--threads", "0"], "--help"),
    ] {
        let o = golioth_sync(args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            !err.contains("backtrace") && !err.contains("Error: "),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_failing_command_says_why_and_exits_1() {
    let o = golioth_sync(&[
        "migrate",
        "--database-url",
        "postgres://nobody@no-such-host.invalid/none",
    ]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("backtrace"), "{err}");
}
