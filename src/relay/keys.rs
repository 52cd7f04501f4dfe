//! Tunnel ids and the relay's API keys.
//!
//! A key is 256 random bits, shown to the operator once and stored only as its SHA-256 digest, so
//! a leaked tunnels file grants nothing. A key carries its role in a prefix (`mcpt_rt_` runtime,
//! `mcpt_cn_` connector, `mcpt_ad_` the relay's admin key) so secret scanners and humans can tell what leaked. Plain SHA-256 (no
//! salt, no stretching) is enough because the keys are random, not passwords: there is nothing to
//! guess.

use ring::digest;

use crate::crypto::{constant_time_eq, random_hex};
use crate::secret::Secret;

/// Which side of a tunnel a key authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `mcp-tunnel run` inside the private network (its `CONTROL_PLANE_API_KEY`).
    Runtime,
    /// MCP hosts calling the tunnel's connector URL (`Authorization: Bearer …`).
    Connector,
}

impl Role {
    /// The key prefix for this role.
    pub fn prefix(self) -> &'static str {
        match self {
            Role::Runtime => "mcpt_rt_",
            Role::Connector => "mcpt_cn_",
        }
    }
}

/// Random bytes in a key, and in a tunnel id.
const KEY_BYTES: usize = 32;
const TUNNEL_ID_BYTES: usize = 16;
pub const TUNNEL_ID_PREFIX: &str = "tunnel_";

/// A new random key for `role`: its prefix and 64 lowercase hex characters.
pub fn generate(role: Role) -> Secret {
    Secret::new(format!("{}{}", role.prefix(), random_hex(KEY_BYTES)))
}

/// The prefix of the relay's admin key, which opens the admin API for every tunnel.
pub const ADMIN_KEY_PREFIX: &str = "mcpt_ad_";

/// A new admin key: its prefix and 64 lowercase hex characters.
pub fn generate_admin() -> Secret {
    Secret::new(format!("{ADMIN_KEY_PREFIX}{}", random_hex(KEY_BYTES)))
}

/// A new tunnel id: `tunnel_` and 32 lowercase hex characters.
pub fn generate_tunnel_id() -> String {
    format!("{TUNNEL_ID_PREFIX}{}", random_hex(TUNNEL_ID_BYTES))
}

/// The SHA-256 digest of `key`, as 64 lowercase hex characters (the stored form).
pub fn hash(key: &str) -> String {
    digest::digest(&digest::SHA256, key.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `presented` is the key whose digest is `stored_hash_hex`. A malformed stored digest
/// matches nothing.
pub fn matches(presented: &str, stored_hash_hex: &str) -> bool {
    let Some(stored) = decode_sha256_hex(stored_hash_hex) else {
        return false;
    };
    let presented = digest::digest(&digest::SHA256, presented.as_bytes());
    constant_time_eq(presented.as_ref(), &stored)
}

/// Whether `s` is a well-formed stored digest: exactly 64 lowercase hex characters.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 2 * digest::SHA256_OUTPUT_LEN && is_lower_hex(s)
}

/// Whether `s` is a well-formed tunnel id: `tunnel_` and 32 lowercase hex characters.
pub fn is_tunnel_id(s: &str) -> bool {
    s.strip_prefix(TUNNEL_ID_PREFIX)
        .is_some_and(|hex| hex.len() == 2 * TUNNEL_ID_BYTES && is_lower_hex(hex))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn decode_sha256_hex(s: &str) -> Option<[u8; digest::SHA256_OUTPUT_LEN]> {
    if !is_sha256_hex(s) {
        return None;
    }
    let mut out = [0u8; digest::SHA256_OUTPUT_LEN];
    for (byte, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_role_prefix_and_64_hex() {
        for (role, prefix) in [(Role::Runtime, "mcpt_rt_"), (Role::Connector, "mcpt_cn_")] {
            let key = generate(role);
            let hex = key.expose().strip_prefix(prefix).expect("role prefix");
            assert_eq!(hex.len(), 64);
            assert!(is_lower_hex(hex), "{hex}");
            // A key never prints through Debug or Display.
            assert_eq!(format!("{key:?} {key}"), "*** ***");
        }
    }

    #[test]
    fn keys_and_ids_are_distinct() {
        let a = generate(Role::Runtime);
        let b = generate(Role::Runtime);
        assert_ne!(a.expose(), b.expose());
        let (x, y) = (generate_tunnel_id(), generate_tunnel_id());
        assert_ne!(x, y);
    }

    #[test]
    fn tunnel_id_format() {
        let id = generate_tunnel_id();
        assert!(is_tunnel_id(&id), "{id}");
        assert_eq!(id.len(), "tunnel_".len() + 32);
        assert!(is_tunnel_id("tunnel_0123456789abcdef0123456789abcdef"));
        for bad in [
            "",
            "tunnel_",
            "tunnel_0123456789ABCDEF0123456789abcdef",
            "tunnel_0123456789abcdef0123456789abcde",
            "tunnel_0123456789abcdef0123456789abcdef0",
            "tunnel-0123456789abcdef0123456789abcdef",
            "tunnel_0123456789abcdef0123456789abcdeg",
        ] {
            assert!(!is_tunnel_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn hash_known_answer() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hash(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn matches_only_the_right_key() {
        let key = generate(Role::Connector);
        let stored = hash(key.expose());
        assert!(is_sha256_hex(&stored));
        assert!(matches(key.expose(), &stored));
        assert!(!matches(generate(Role::Connector).expose(), &stored));
        assert!(!matches("", &stored));
        // A key differing in its last character.
        let mut near = key.expose().to_string();
        let last = near.pop().expect("non-empty");
        near.push(if last == '0' { '1' } else { '0' });
        assert!(!matches(&near, &stored));
    }

    #[test]
    fn malformed_stored_hash_matches_nothing() {
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert!(matches("abc", abc));
        for bad in [
            "",
            "abc",
            &abc[..62],
            &format!("{abc}00"),
            &abc.to_uppercase(),
            &format!("{}zz", &abc[..62]),
            // 64 bytes but not 64 characters of hex: multi-byte UTF-8 must not panic.
            &format!("{}é", &abc[..62]),
        ] {
            assert!(!matches("abc", bad), "{bad:?}");
        }
    }
}
