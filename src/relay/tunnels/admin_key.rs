//! `mcp-tunnel relay admin-key [create|rotate|remove]`: the relay's admin key, which opens the
//! admin API (`/v1/tunnels`, [`crate::relay::admin`]). Like the tunnels' keys it is printed once
//! to stdout and stored only as its SHA-256 digest (`admin_key_sha256` in the tunnels file); the
//! running relay picks the change up as it does every change to that file. Exit codes as
//! `relay tunnel`: 0 done, 1 I/O error, 2 usage error or invalid tunnels file.

use std::ffi::OsString;
use std::io::{self, Write};

use super::cli::{Fail, TUNNELS_FILE, edit_failure, positionals, print};
use super::edit::{self, AdminKeyChange};
use crate::config::Sources;

const USAGE: &str = "\
mcp-tunnel relay admin-key: the relay's admin key (opens the admin API, /v1/tunnels)

Usage: mcp-tunnel relay admin-key [COMMAND] [--tunnels-file PATH]

Commands:
  create   make the admin key and print it, once; refused if one exists [default]
  rotate   replace the admin key (or make the first) and print the new one, once;
           the old key stops working
  remove   delete the admin key: the admin API answers 401 to everyone

Options:
  --tunnels-file PATH    the tunnels file [env: RELAY_TUNNELS_FILE]
                         [default: /etc/mcp-tunnel/tunnels.toml]
  -h, --help             print this help

The key is stored only as its SHA-256 digest, so it can be shown only when made.
Exit codes: 0 done, 1 I/O error, 2 usage error or invalid tunnels file.
";

/// `mcp-tunnel relay admin-key …` (arguments after `admin-key`). Returns the exit code.
pub fn admin_key_command(args: Vec<OsString>) -> i32 {
    let env = |name: &str| std::env::var(name).ok();
    let mut out = io::stdout().lock();
    let message = match dispatch(args, &env, &mut out) {
        Ok(()) => return 0,
        Err(Fail::Usage(m)) => (format!("{m}\nsee `mcp-tunnel relay admin-key --help`"), 2),
        Err(Fail::Config(m)) => (m, 2),
        Err(Fail::Io(m)) => (m, 1),
    };
    eprintln!("mcp-tunnel relay admin-key: {}", message.0);
    message.1
}

fn dispatch(
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
) -> Result<(), Fail> {
    let Some((src, rest)) = Sources::parse_known(&[TUNNELS_FILE], args, env)? else {
        return print(out, USAGE);
    };
    let file = src.path(TUNNELS_FILE.flag).expect("has a default");
    if file.as_os_str().is_empty() {
        return Err(Fail::Usage("--tunnels-file: must not be empty".into()));
    }
    let change = match rest.first().and_then(|a| a.to_str()) {
        None => AdminKeyChange::Create,
        Some("help") => return print(out, USAGE),
        Some("create") => AdminKeyChange::Create,
        Some("rotate") => AdminKeyChange::Rotate,
        Some("remove") => AdminKeyChange::Remove,
        Some(other) if other.starts_with('-') => {
            // Only the flag's name: a value after `=` could be a key typed in the wrong place.
            let flag = other.split('=').next().unwrap_or(other);
            return Err(Fail::Usage(format!("unknown flag {flag}")));
        }
        Some(_) => {
            return Err(Fail::Usage(
                "unknown command; use create, rotate or remove".into(),
            ));
        }
    };
    positionals::<0>(rest.into_iter().skip(1).collect(), "admin-key")?;
    let key = edit::admin_key(&file, change).map_err(|e| match e {
        // A key that exists (or does not): the file's state, not a mistake in the command line.
        edit::EditError::Invalid(m) => Fail::Config(m),
        e => edit_failure(&file, e),
    })?;
    let text = match key {
        Some(key) => format!(
            "{} the admin key in {}\n  admin key:      {}\n                  \
             (the relay's admin API: `Authorization: Bearer <admin key>` on /v1/tunnels)\n\
             WARNING: the key is shown only now; the relay stores only its SHA-256 digest. \
             Keep it in a secret store; `rotate` replaces a lost key.\n",
            if change == AdminKeyChange::Rotate {
                "Replaced"
            } else {
                "Created"
            },
            file.display(),
            key.expose()
        ),
        None => format!(
            "Removed the admin key from {}; the admin API is closed\n",
            file.display()
        ),
    };
    print(out, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::tunnels::load;
    use crate::relay::tunnels::tests::TempDir;

    fn cmd(file: &std::path::Path, argv: &[&str]) -> (Result<(), Fail>, String) {
        let mut args: Vec<OsString> = argv.iter().map(OsString::from).collect();
        args.push("--tunnels-file".into());
        args.push(file.into());
        let mut out = Vec::new();
        let result = dispatch(args, &|_| None, &mut out);
        (result, String::from_utf8(out).expect("UTF-8"))
    }

    fn printed_key(out: &str) -> String {
        out.lines()
            .find_map(|l| l.trim().strip_prefix("admin key:"))
            .map(|k| k.trim().to_string())
            .unwrap_or_else(|| panic!("no key in {out}"))
    }

    #[test]
    fn create_rotate_remove() {
        let dir = TempDir::new();
        let file = dir.file();
        let (r, out) = cmd(&file, &[]);
        assert!(r.is_ok(), "{r:?}");
        let first = printed_key(&out);
        assert!(first.starts_with("mcpt_ad_"), "{out}");
        assert_eq!(out.matches(&first).count(), 1);
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(
            !text.contains(&first) && text.contains("admin_key_sha256"),
            "{text}"
        );
        assert!(load(&file).expect("load").admin_key_matches(&first));

        // A second create would lock out whoever holds the first key.
        let (r, out) = cmd(&file, &["create"]);
        assert!(
            matches!(&r, Err(Fail::Config(m)) if m.contains("rotate")),
            "{r:?}"
        );
        assert!(out.is_empty());

        let (r, out) = cmd(&file, &["rotate"]);
        assert!(r.is_ok(), "{r:?}");
        let second = printed_key(&out);
        let reg = load(&file).expect("load");
        assert!(reg.admin_key_matches(&second) && !reg.admin_key_matches(&first));

        let (r, _) = cmd(&file, &["remove"]);
        assert!(r.is_ok(), "{r:?}");
        assert!(!load(&file).expect("load").admin_key_matches(&second));
        let (r, _) = cmd(&file, &["remove"]);
        assert!(r.is_err());

        for bad in [&["frob"][..], &["rotate", "extra"], &["--key=mcpt_ad_x"]] {
            let (r, _) = cmd(&file, bad);
            let m = match r {
                Err(Fail::Usage(m)) => m,
                other => panic!("{bad:?}: {other:?}"),
            };
            assert!(!m.contains("mcpt_ad_x"), "{m}");
        }
    }
}
