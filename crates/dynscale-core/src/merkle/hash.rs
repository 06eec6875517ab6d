//! The SHA-256 hash of the audit log's Merkle tree and the RFC 9162 §2.1 leaf and node hashing.
//!
//! Leaves and interior nodes are hashed with distinct one-byte prefixes (0x00 and 0x01) so
//! that no leaf can be passed off as an interior node (the second-preimage defence of
//! RFC 9162 §2.1.1).

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Length in bytes of a [`Hash`](struct@Hash).
pub const HASH_SIZE: usize = 32;

/// A SHA-256 value in the Merkle tree: a leaf hash, an interior node hash or a root.
///
/// It prints and serializes as 64 lowercase hex digits, the form people compare by eye and
/// the JSON API carries.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; HASH_SIZE]);

impl Hash {
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; HASH_SIZE] {
        &self.0
    }

    /// Takes exactly 32 bytes; any other length is refused rather than padded or cut.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, HashParseError> {
        let array: [u8; HASH_SIZE] = bytes
            .try_into()
            .map_err(|_| HashParseError::ByteLength { found: bytes.len() })?;
        Ok(Self(array))
    }
}

impl From<[u8; HASH_SIZE]> for Hash {
    fn from(bytes: [u8; HASH_SIZE]) -> Self {
        Self(bytes)
    }
}

impl AsRef<[u8]> for Hash {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// SHA-256(0x00 ‖ entry): the hash of one log entry (RFC 9162 §2.1.1).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(entry);
    Hash(hasher.finalize().into())
}

/// SHA-256(0x01 ‖ left ‖ right): the hash of an interior node (RFC 9162 §2.1.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left.0);
    hasher.update(right.0);
    Hash(hasher.finalize().into())
}

/// SHA-256 of the empty string: the root of the tree with no entries (RFC 9162 §2.1.1).
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

/// Why a text is not a hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashParseError {
    /// The text is not 64 hex digits long.
    #[error("a hash is 64 hex digits, found {found}")]
    Length {
        /// Number of characters found.
        found: usize,
    },
    /// A raw hash is not 32 bytes long.
    #[error("a hash is 32 bytes, found {found}")]
    ByteLength {
        /// Number of bytes found.
        found: usize,
    },
    /// A character is not a hex digit.
    #[error("character {character:?} at position {position} is not a hex digit")]
    NotHex {
        /// The offending character.
        character: char,
        /// Its character position in the text.
        position: usize,
    },
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0u8; HASH_SIZE * 2];
        for (i, byte) in self.0.iter().enumerate() {
            text[2 * i] = HEX_DIGITS[usize::from(byte >> 4)];
            text[2 * i + 1] = HEX_DIGITS[usize::from(byte & 0x0f)];
        }
        // Every byte written above comes from HEX_DIGITS, which is ASCII.
        let text = std::str::from_utf8(&text).map_err(|_| fmt::Error)?;
        f.write_str(text)
    }
}

// Debug shows the hex too: a byte array of 32 decimals is unreadable in test failures.
impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

impl FromStr for Hash {
    type Err = HashParseError;

    /// Accepts 64 hex digits in either case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let count = text.chars().count();
        if count != HASH_SIZE * 2 {
            return Err(HashParseError::Length { found: count });
        }
        // The length check above counted characters, so a 64-character text is 64 bytes
        // here only if it is ASCII; a non-ASCII character is reported by `nibble` first.
        let mut bytes = [0u8; HASH_SIZE];
        let mut chars = text.chars().enumerate();
        for byte in &mut bytes {
            let (high, low) = match (chars.next(), chars.next()) {
                (Some(high), Some(low)) => (high, low),
                _ => return Err(HashParseError::Length { found: count }),
            };
            *byte = (nibble(high)? << 4) | nibble(low)?;
        }
        Ok(Self(bytes))
    }
}

fn nibble((position, character): (usize, char)) -> Result<u8, HashParseError> {
    character
        .to_digit(16)
        .and_then(|digit| u8::try_from(digit).ok())
        .ok_or(HashParseError::NotHex {
            character,
            position,
        })
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HexVisitor;

        impl Visitor<'_> for HexVisitor {
            type Value = Hash;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a SHA-256 hash as 64 hex digits")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Hash, E> {
                text.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(HexVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            empty_root().to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn leaf_and_node_use_distinct_prefixes() {
        // The leaf hash of the empty entry is the RFC 6962 size-1 reference root.
        assert_eq!(
            leaf_hash(b"").to_string(),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        let a = leaf_hash(b"a");
        let b = leaf_hash(b"b");
        let mut concatenated = a.0.to_vec();
        concatenated.extend_from_slice(&b.0);
        assert_ne!(node_hash(&a, &b), leaf_hash(&concatenated));
        assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
    }

    #[test]
    fn hex_round_trips_and_rejects_bad_text() {
        let hash = leaf_hash(b"round trip");
        let text = hash.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<Hash>(), Ok(hash));
        assert_eq!(text.to_uppercase().parse::<Hash>(), Ok(hash));
        assert_eq!(
            text[..62].parse::<Hash>(),
            Err(HashParseError::Length { found: 62 })
        );
        let mut bad = text.clone();
        bad.replace_range(10..11, "g");
        assert_eq!(
            bad.parse::<Hash>(),
            Err(HashParseError::NotHex {
                character: 'g',
                position: 10
            })
        );
        let mut non_ascii = text[..63].to_string();
        non_ascii.push('é');
        assert!(matches!(
            non_ascii.parse::<Hash>(),
            Err(HashParseError::NotHex {
                character: 'é',
                position: 63
            })
        ));
    }

    #[test]
    fn serde_uses_hex() {
        let hash = leaf_hash(b"serde");
        let json = serde_json::to_string(&hash).expect("a hash serializes");
        assert_eq!(json, format!("\"{hash}\""));
        let back: Hash = serde_json::from_str(&json).expect("its own output parses");
        assert_eq!(back, hash);
        assert!(serde_json::from_str::<Hash>("\"abc\"").is_err());
        assert!(serde_json::from_str::<Hash>("[1,2,3]").is_err());
    }

    #[test]
    fn from_slice_requires_32_bytes() {
        assert_eq!(Hash::from_slice(&[7u8; 32]), Ok(Hash([7u8; 32])));
        assert_eq!(
            Hash::from_slice(&[7u8; 31]),
            Err(HashParseError::ByteLength { found: 31 })
        );
    }
}
