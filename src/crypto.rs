//! The project's two small uses of cryptography outside TLS: random bytes from the operating
//! system (tunnel ids, API keys, shard tokens, session ids, instance ids, backoff jitter) and a
//! comparison whose timing does not depend on where two secrets differ.
//!
//! Both go through ring, which rustls already links; nothing here is a primitive of our own.

/// Eight bytes from the operating system's random generator.
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    random_fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// Fills `buf` from the operating system's random generator.
pub fn random_fill(buf: &mut [u8]) {
    use ring::rand::SecureRandom;
    // The OS generator failing is not something a network tool can recover from.
    ring::rand::SystemRandom::new()
        .fill(buf)
        .expect("the operating system's random generator failed");
}

/// `len` random bytes as lowercase hex.
pub fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    random_fill(&mut bytes);
    to_hex(&bytes)
}

/// `bytes` as lowercase hex, in one allocation.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// Compares without stopping at the first difference, so response timing does not reveal how much
/// of a guessed secret was right. The length may show; callers compare digests or tokens whose
/// length is not the secret. ring's `constant_time::verify_slices_are_equal` is deprecated in
/// 0.17, so this is the usual fold.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the optimizer from turning the fold back into an early-exit compare.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_hex_has_the_asked_length_and_differs() {
        let a = random_hex(16);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, random_hex(16));
    }

    #[test]
    fn to_hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(to_hex(&[]), "");
        assert_eq!(to_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn constant_time_eq_basics() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
