//! The chain's hash and the node's signature, written as lowercase hex. Parsing is strict (exact
//! length, lowercase only) so that one value has exactly one text.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// Declares a fixed-size byte string written as `2 * $len` lowercase hex digits.
macro_rules! hex_bytes {
    ($(#[$doc:meta])* $name:ident, $len:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name([u8; $len]);

        impl $name {
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Accepts exactly `2 * len` lowercase hex digits: no upper case, no prefix, no
            /// spaces, so two different texts never decode to the same value.
            pub fn parse(s: &str) -> Result<Self, String> {
                let well_formed = s.len() == 2 * $len
                    && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                let mut bytes = [0u8; $len];
                if !well_formed || hex::decode_to_slice(s, &mut bytes).is_err() {
                    return Err(format!("must be {} lowercase hex digits", 2 * $len));
                }
                Ok(Self(bytes))
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_bytes!(
    /// A SHA-256 digest: an event's `hash`, or the `prev_hash` naming the node's previous event.
    Hash,
    32
);

hex_bytes!(
    /// An Ed25519 signature, by the recording node, of the 32 bytes of an event's `hash`.
    Signature,
    64
);

impl Hash {
    /// The `prev_hash` of a node's first event (`node_seq` 1): no event comes before it.
    pub const GENESIS: Hash = Hash([0; 32]);

    pub fn sha256(bytes: &[u8]) -> Hash {
        Hash(Sha256::digest(bytes).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn sha256_is_written_as_lowercase_hex_and_parses_back() {
        let hash = Hash::sha256(b"abc");
        assert_eq!(hash.to_string(), ABC_SHA256);
        assert_eq!(Hash::parse(ABC_SHA256), Ok(hash));
        assert_eq!(
            serde_json::to_string(&hash).unwrap(),
            format!("\"{ABC_SHA256}\"")
        );
    }

    #[test]
    fn genesis_is_64_zeros() {
        assert_eq!(Hash::GENESIS.to_string(), "0".repeat(64));
    }

    #[test]
    fn hash_text_other_than_64_lowercase_hex_digits_is_refused() {
        for bad in [
            ABC_SHA256.to_uppercase(),
            ABC_SHA256.replacen('b', "B", 1),
            ABC_SHA256[..62].to_owned(),
            format!("{ABC_SHA256}00"),
            format!("0x{}", &ABC_SHA256[2..]),
            format!(" {}", &ABC_SHA256[1..]),
            format!("{}g", &ABC_SHA256[..63]),
            String::new(),
        ] {
            assert!(Hash::parse(&bad).is_err(), "{bad:?} was accepted");
            let json = serde_json::to_string(&bad).unwrap();
            assert!(
                serde_json::from_str::<Hash>(&json).is_err(),
                "{json} was accepted"
            );
        }
    }

    #[test]
    fn signature_text_other_than_128_lowercase_hex_digits_is_refused() {
        let good = "ab".repeat(64);
        assert_eq!(
            Signature::parse(&good).map(|s| s.to_string()),
            Ok(good.clone())
        );
        for bad in [
            good.to_uppercase(),
            good[..126].to_owned(),
            format!("{good}ab"),
        ] {
            assert!(Signature::parse(&bad).is_err(), "{bad:?} was accepted");
        }
    }
}
