//! Time-based one-time passwords (RFC 6238: HMAC-SHA1, 6 digits, 30-second steps), the second
//! factor of a login. It owns deriving a user's secret, computing and checking codes, and the
//! `otpauth://` URI an authenticator app scans.
//!
//! A secret is never stored: the service keeps one key and derives each user's secret from it,
//! the user id and a nonce, so an event records only the nonce and no event holds a secret.
//! [`verify`] returns the time step it matched, so the caller can refuse a code of a step
//! already used (a replayed code).

use std::fmt;

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Seconds per time step (RFC 6238's X).
pub const PERIOD: u64 = 30;
/// Digits in a code.
pub const DIGITS: usize = 6;
const MODULUS: u32 = 1_000_000;
/// Domain separation: a key used for anything else never yields the same bytes.
const DERIVE_LABEL: &[u8] = b"hms-totp-v1";

/// A 20-byte TOTP secret (the length RFC 4226 recommends for HMAC-SHA1).
#[derive(Clone)]
pub struct TotpSecret([u8; 20]);

impl TotpSecret {
    /// The secret of `user_id`: the first 20 bytes of
    /// HMAC-SHA256(`service_key`, "hms-totp-v1" ‖ user id ‖ nonce). The user id has a fixed
    /// length, so no two (user, nonce) pairs hash the same input. Changing this derivation
    /// invalidates every enrolled authenticator.
    pub fn derive(service_key: &[u8], user_id: Uuid, nonce: &str) -> TotpSecret {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(service_key).expect("HMAC accepts a key of any length");
        mac.update(DERIVE_LABEL);
        mac.update(user_id.as_bytes());
        mac.update(nonce.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut secret = [0u8; 20];
        secret.copy_from_slice(&digest[..20]);
        TotpSecret(secret)
    }

    pub fn from_bytes(bytes: [u8; 20]) -> TotpSecret {
        TotpSecret(bytes)
    }

    /// RFC 4648 base32, uppercase and unpadded: how authenticator apps take a secret.
    pub fn base32(&self) -> String {
        base32(&self.0)
    }
}

/// The bytes are a credential: they must not reach a log through `{:?}`.
impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(..)")
    }
}

/// The 6-digit code of the time step holding `unix_seconds`.
pub fn code_at(secret: &TotpSecret, unix_seconds: u64) -> u32 {
    code_at_step(secret, unix_seconds / PERIOD)
}

/// A code as the user sees it: six digits, zero-padded (`81804` is `"081804"`).
pub fn format_code(code: u32) -> String {
    format!("{code:0DIGITS$}")
}

/// The time step `code` belongs to, if it is exactly six ASCII digits and the code of the
/// current step or of one step either side (an authenticator's clock may drift, and a user
/// takes a few seconds to type). Codes are compared in constant time, and every step of the
/// window is computed whatever matches, so timing tells nothing about the right code.
pub fn verify(secret: &TotpSecret, code: &str, unix_seconds: u64) -> Option<u64> {
    // The format is public: refusing a malformed code early leaks nothing.
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = unix_seconds / PERIOD;
    // The current step first: should two steps share a code, the one a replay check
    // is least likely to refuse wins.
    let steps = [
        Some(current),
        current.checked_sub(1),
        current.checked_add(1),
    ];
    let mut matched = None;
    for step in steps.into_iter().flatten() {
        let expected = format_code(code_at_step(secret, step));
        let equal: bool = expected.as_bytes().ct_eq(code.as_bytes()).into();
        if equal && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// The URI an authenticator app reads from a QR code (the Key Uri Format of Google
/// Authenticator). Issuer and account are percent-encoded, so a ':' in either cannot be
/// mistaken for the separator between them.
pub fn otpauth_uri(secret: &TotpSecret, issuer: &str, account: &str) -> String {
    let issuer = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={PERIOD}",
        account = percent_encode(account),
        secret = secret.base32(),
    )
}

fn code_at_step(secret: &TotpSecret, step: u64) -> u32 {
    truncated_hotp(secret, step) % MODULUS
}

/// RFC 4226 HOTP before the decimal reduction: the 31-bit dynamic truncation of
/// HMAC-SHA1(secret, counter).
fn truncated_hotp(secret: &TotpSecret, counter: u64) -> u32 {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(&secret.0).expect("HMAC accepts a key of any length");
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let word = [
        digest[offset],
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ];
    u32::from_be_bytes(word) & 0x7fff_ffff
}

fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    // Bits not yet written, in the low `bits` bits of `buffer` (never more than 12).
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// RFC 3986 percent-encoding of every byte but the unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B's SHA-1 secret.
    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(*b"12345678901234567890")
    }

    /// RFC 6238 Appendix B, SHA-1: (time, 8-digit code).
    const RFC_VECTORS: [(u64, u32); 6] = [
        (59, 94287082),
        (1111111109, 7081804),
        (1111111111, 14050471),
        (1234567890, 89005924),
        (2000000000, 69279037),
        (20000000000, 65353130),
    ];

    #[test]
    fn rfc6238_sha1_vectors_with_eight_digits() {
        let secret = rfc_secret();
        for (time, code) in RFC_VECTORS {
            assert_eq!(
                truncated_hotp(&secret, time / PERIOD) % 100_000_000,
                code,
                "t = {time}"
            );
        }
    }

    #[test]
    fn rfc6238_sha1_vectors_with_six_digits() {
        let secret = rfc_secret();
        let expected = ["287082", "081804", "050471", "005924", "279037", "353130"];
        for ((time, _), want) in RFC_VECTORS.into_iter().zip(expected) {
            assert_eq!(format_code(code_at(&secret, time)), want, "t = {time}");
            assert_eq!(
                verify(&secret, want, time),
                Some(time / PERIOD),
                "t = {time}"
            );
        }
    }

    #[test]
    fn format_code_pads_to_six_digits() {
        assert_eq!(format_code(0), "000000");
        assert_eq!(format_code(81804), "081804");
        assert_eq!(format_code(999_999), "999999");
    }

    #[test]
    fn verify_accepts_one_step_of_drift_and_no_more() {
        let secret = rfc_secret();
        let now = 1_111_111_111;
        let step = now / PERIOD;
        let code = format_code(code_at(&secret, now));
        assert_eq!(verify(&secret, &code, now), Some(step));
        // The server's clock ahead of or behind the authenticator's by one step.
        assert_eq!(verify(&secret, &code, now + 30), Some(step));
        assert_eq!(verify(&secret, &code, now - 30), Some(step));
        assert_eq!(verify(&secret, &code, now + 60), None);
        assert_eq!(verify(&secret, &code, now - 60), None);
        // The step returned is the code's, not the current one: what a replay check needs.
        let previous = format_code(code_at(&secret, now - 30));
        assert_eq!(verify(&secret, &previous, now), Some(step - 1));
        let next = format_code(code_at(&secret, now + 30));
        assert_eq!(verify(&secret, &next, now), Some(step + 1));
    }

    #[test]
    fn verify_refuses_a_wrong_code() {
        let secret = rfc_secret();
        let now = 1_234_567_890;
        let window: Vec<u32> = [now - 30, now, now + 30]
            .iter()
            .map(|&t| code_at(&secret, t))
            .collect();
        let wrong = (0..MODULUS).find(|c| !window.contains(c)).expect("a code");
        assert_eq!(verify(&secret, &format_code(wrong), now), None);
        let other = TotpSecret::from_bytes([7; 20]);
        assert_ne!(code_at(&other, now), code_at(&secret, now));
        assert_eq!(
            verify(&other, &format_code(code_at(&secret, now)), now),
            None
        );
    }

    #[test]
    fn verify_refuses_malformed_codes() {
        let secret = rfc_secret();
        let now = 59;
        assert_eq!(verify(&secret, "287082", now), Some(1));
        for code in [
            "", "28708", "2870820", "0287082", "28708a", "28708 ", " 28708", "+28708", "-28708",
            "287 82", "２87082", "287082\n",
        ] {
            assert_eq!(verify(&secret, code, now), None, "{code:?}");
        }
    }

    #[test]
    fn verify_at_the_epoch_does_not_underflow() {
        let secret = rfc_secret();
        let code = format_code(code_at(&secret, 0));
        assert_eq!(verify(&secret, &code, 0), Some(0));
        assert_eq!(verify(&secret, &code, 29), Some(0));
        let at_the_end = format_code(code_at(&secret, u64::MAX));
        assert_eq!(
            verify(&secret, &at_the_end, u64::MAX),
            Some(u64::MAX / PERIOD)
        );
    }

    #[test]
    fn base32_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(input.as_bytes()), want, "{input:?}");
        }
        assert_eq!(rfc_secret().base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(TotpSecret::from_bytes([0xff; 20]).base32(), "7".repeat(32));
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        assert_eq!(format!("{:?}", rfc_secret()), "TotpSecret(..)");
        assert_eq!(format!("{:#?}", rfc_secret()), "TotpSecret(..)");
    }

    #[test]
    fn otpauth_uri_escapes_issuer_and_account() {
        let uri = otpauth_uri(&rfc_secret(), "HMS Central", "ward 7:alice@example.org");
        assert_eq!(
            uri,
            "otpauth://totp/HMS%20Central:ward%207%3Aalice%40example.org\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=HMS%20Central\
             &algorithm=SHA1&digits=6&period=30"
        );
        assert_eq!(percent_encode("aZ09-._~"), "aZ09-._~");
        assert_eq!(percent_encode("é/?&="), "%C3%A9%2F%3F%26%3D");
    }

    #[test]
    fn derive_is_deterministic_and_separates_users_and_nonces() {
        let key = b"service-key";
        let user = Uuid::from_u128(0x0190a5c8_7d4e_7b3a_9c1d_2e3f4a5b6c7d);
        let other_user = Uuid::from_u128(0x0190a5c8_7d4e_7b3a_9c1d_2e3f4a5b6c7e);
        let secret = TotpSecret::derive(key, user, "nonce-1");
        // Pinned (computed independently): a changed derivation would lock every user out.
        assert_eq!(secret.base32(), "I7Z7Y4VTZZO4BIIUFMGTVIWNDETM3EML");
        assert_eq!(TotpSecret::derive(key, user, "nonce-1").0, secret.0);
        assert_ne!(TotpSecret::derive(key, user, "nonce-2").0, secret.0);
        assert_ne!(TotpSecret::derive(key, other_user, "nonce-1").0, secret.0);
        assert_ne!(
            TotpSecret::derive(b"other-key", user, "nonce-1").0,
            secret.0
        );
        assert_ne!(TotpSecret::derive(b"", user, "").0, [0; 20]);
    }
}
