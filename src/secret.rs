//! A value that must never be printed: API keys, bearer tokens, header values an operator marks
//! as sensitive, shard tokens.
//!
//! `Debug` and `Display` both print `***`, so a secret that ends up in a log line, an error or a
//! `{:?}` dump of the config shows nothing. The only way to the real text is [`Secret::expose`],
//! which makes every use easy to find in an audit. [`make_non_dumpable`] keeps them from other
//! processes of our uid (stdio servers included).

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The real value, for the one place that puts it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Closes `/proc/<pid>/environ`, `/proc/<pid>/mem` and ptrace to other processes of our uid
/// (root keeps them). It also disables core dumps, which would hold the key too.
pub fn make_non_dumpable() {
    match rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable) {
        Ok(()) => log::debug!("process made non-dumpable (PR_SET_DUMPABLE 0)"),
        // Not fatal: the key is still never given to a child; say what is left open.
        Err(e) => log::warn!(
            "cannot make the process non-dumpable ({e}); same-uid processes, stdio servers \
             included, can read its environment"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("sk-very-secret");
        assert_eq!(format!("{s:?} {s} {:?}", Some(&s)), "*** *** Some(***)");
        assert_eq!(s.expose(), "sk-very-secret");
    }
}
