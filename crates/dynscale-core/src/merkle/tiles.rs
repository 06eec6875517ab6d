//! Tiles: the C2SP tlog-tiles grouping of stored hashes into files of 256 hashes, and their
//! paths (`tile/<L>/<N>[.p/<W>]`, entry bundles at `tile/entries/<N>[.p/<W>]`).
//!
//! A tile at level `L` holds up to 256 consecutive hashes of tree level `8·L`: level 0 tiles
//! hold leaf hashes, level 1 tiles hold hashes of complete 256-leaf subtrees, and so on. The
//! tree levels between those are not stored; they are recomputed from the tile's hashes. A
//! partial tile (fewer than 256 hashes) is the rightmost one of its level in a tree whose
//! size is not a multiple of the tile span, and is replaced by wider ones as the log grows.

use std::fmt::Write as _;
use std::ops::Range;

use super::hash::{HASH_SIZE, Hash, node_hash};
use super::stored_hashes::{split_stored_hash_index, stored_hash_index};

/// Tree levels spanned by one tile: C2SP tlog-tiles fixes it at 8.
pub const TILE_HEIGHT: u8 = 8;

/// Hashes in a full tile.
pub const TILE_WIDTH: u16 = 1 << TILE_HEIGHT;

/// Highest tile level a tree of at most [`super::MAX_TREE_SIZE`] leaves reaches.
///
/// The tlog-tiles path syntax admits levels up to 63, but a level-8 tile would hold hashes
/// of 2^64-leaf subtrees, which no log here can have.
pub const MAX_TILE_LEVEL: u8 = 7;

/// A tile of Merkle hashes: `width` consecutive hashes of tree level `8·level`, starting at
/// hash number `256·index` of that level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    level: u8,
    index: u64,
    width: u16,
}

/// An entry bundle: the log entries whose leaf hashes form the level-0 tile of the same
/// index and width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryBundle {
    index: u64,
    width: u16,
}

/// What a tlog-tiles path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileResource {
    /// A tile of hashes, `tile/<L>/<N>[.p/<W>]`.
    Hashes(Tile),
    /// An entry bundle, `tile/entries/<N>[.p/<W>]`.
    Entries(EntryBundle),
}

/// Why a tile could not be built or its data not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    /// Width outside 1..=256.
    #[error("tile width {width} is outside 1..=256")]
    Width {
        /// The width given.
        width: u16,
    },
    /// Level above [`MAX_TILE_LEVEL`].
    #[error("tile level {level} is above the maximum of {MAX_TILE_LEVEL}")]
    Level {
        /// The level given.
        level: u8,
    },
    /// Index so large the tile would lie beyond any tree this log can hold.
    #[error("tile index {index} at level {level} lies beyond the largest tree")]
    Index {
        /// The tile level.
        level: u8,
        /// The index given.
        index: u64,
    },
    /// Tile data whose length does not match the tile's width.
    #[error("tile {path} must be {expected} bytes, found {found}")]
    DataLength {
        /// The tile's path.
        path: String,
        /// Bytes expected: 32 per hash.
        expected: usize,
        /// Bytes found.
        found: usize,
    },
    /// A hash range inside a tile that is not a complete subtree of it.
    #[error("hash range {start}..{end} is not a complete subtree within tile {path}")]
    Range {
        /// The tile's path.
        path: String,
        /// First hash position.
        start: usize,
        /// One past the last hash position.
        end: usize,
    },
}

/// Why a text is not a tlog-tiles path. Each variant names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TilePathError {
    /// The path does not start with `tile/<L>/` or `tile/entries/`.
    #[error("{path:?} is not of the form tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>]")]
    Shape {
        /// The whole path.
        path: String,
    },
    /// The level is not a decimal integer without leading zeros, or is too high.
    #[error("tile level {text:?} is not a decimal in 0..={MAX_TILE_LEVEL} without leading zeros")]
    Level {
        /// The level element.
        text: String,
    },
    /// An element of the index is not a canonical three-digit group.
    #[error("tile index element {element:?} is not a canonical three-digit group")]
    Index {
        /// The offending element.
        element: String,
    },
    /// The width after `.p/` is not a decimal in 1..=255 without leading zeros.
    #[error("partial tile width {text:?} is not a decimal in 1..=255 without leading zeros")]
    Width {
        /// The width element.
        text: String,
    },
    /// The tile lies beyond any tree this log can hold.
    #[error(transparent)]
    Tile(#[from] TileError),
}

impl Tile {
    /// A tile; `width` is 1..=256 (256 is a full tile).
    pub fn new(level: u8, index: u64, width: u16) -> Result<Self, TileError> {
        if width == 0 || width > TILE_WIDTH {
            return Err(TileError::Width { width });
        }
        if level > MAX_TILE_LEVEL {
            return Err(TileError::Level { level });
        }
        // The tile must lie inside a tree of at most MAX_TREE_SIZE leaves; this keeps every
        // shift in the methods below inside u64. u128 holds the product for any index.
        let end_leaf = (u128::from(index) * u128::from(TILE_WIDTH) + u128::from(width))
            << (u32::from(TILE_HEIGHT) * u32::from(level));
        if end_leaf > u128::from(super::stored_hashes::MAX_TREE_SIZE) {
            return Err(TileError::Index { level, index });
        }
        Ok(Self {
            level,
            index,
            width,
        })
    }

    /// The tile level `L` (tree level `8·L`).
    pub fn level(&self) -> u8 {
        self.level
    }

    /// The tile's index `N` within its level.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Number of hashes in the tile, 1..=256.
    pub fn width(&self) -> u16 {
        self.width
    }

    /// Whether the tile holds all 256 hashes.
    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }

    /// Size in bytes of the tile's data.
    pub fn byte_len(&self) -> usize {
        usize::from(self.width) * HASH_SIZE
    }

    /// The tile's path, `tile/<L>/<N>` or `tile/<L>/<N>.p/<W>` for a partial tile.
    pub fn path(&self) -> String {
        let mut path = format!("tile/{}/", self.level);
        push_index_and_width(&mut path, self.index, self.width);
        path
    }

    /// The leaves `[start, end)` the tile's hashes cover, as far as its width reaches.
    pub fn leaf_range(&self) -> Range<u64> {
        let leaves_per_hash_bits = u32::from(TILE_HEIGHT) * u32::from(self.level);
        let first_hash = self.index * u64::from(TILE_WIDTH);
        let start = first_hash << leaves_per_hash_bits;
        let end = (first_hash + u64::from(self.width)) << leaves_per_hash_bits;
        start..end
    }

    /// The stored-hash positions of the tile's hashes, in tile order.
    pub fn stored_hash_indexes(&self) -> Vec<u64> {
        let tree_level = self.level * TILE_HEIGHT;
        let first = self.index * u64::from(TILE_WIDTH);
        (0..u64::from(self.width))
            .map(|i| stored_hash_index(tree_level, first + i))
            .collect()
    }

    /// Splits tile data into its hashes, refusing data of the wrong length.
    pub fn parse_data(&self, data: &[u8]) -> Result<Vec<Hash>, TileError> {
        if data.len() != self.byte_len() {
            return Err(TileError::DataLength {
                path: self.path(),
                expected: self.byte_len(),
                found: data.len(),
            });
        }
        data.chunks_exact(HASH_SIZE)
            .map(|chunk| {
                Hash::from_slice(chunk).map_err(|_| TileError::DataLength {
                    path: self.path(),
                    expected: self.byte_len(),
                    found: data.len(),
                })
            })
            .collect()
    }

    /// The hash of the complete subtree spanned by the tile hashes at positions `range`,
    /// as returned by [`tile_for_index`], computed from the tile's data.
    pub fn subtree_hash(&self, data: &[u8], range: Range<usize>) -> Result<Hash, TileError> {
        let hashes = self.parse_data(data)?;
        let count = range.end.saturating_sub(range.start);
        let aligned = count.is_power_of_two() && range.start.is_multiple_of(count);
        let Some(slice) = hashes.get(range.clone()).filter(|_| aligned) else {
            return Err(TileError::Range {
                path: self.path(),
                start: range.start,
                end: range.end,
            });
        };
        let mut level = slice.to_vec();
        while level.len() > 1 {
            level = level
                .chunks_exact(2)
                .map(|pair| node_hash(&pair[0], &pair[1]))
                .collect();
        }
        level.pop().ok_or(TileError::Range {
            path: self.path(),
            start: range.start,
            end: range.end,
        })
    }
}

impl EntryBundle {
    /// An entry bundle; `width` is 1..=256 (256 is a full bundle).
    pub fn new(index: u64, width: u16) -> Result<Self, TileError> {
        let tile = Tile::new(0, index, width)?;
        Ok(Self {
            index: tile.index,
            width: tile.width,
        })
    }

    /// The bundle's index `N`.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Number of entries in the bundle, 1..=256.
    pub fn width(&self) -> u16 {
        self.width
    }

    /// The bundle's path, `tile/entries/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        let mut path = String::from("tile/entries/");
        push_index_and_width(&mut path, self.index, self.width);
        path
    }

    /// The level-0 tile holding the leaf hashes of this bundle's entries.
    pub fn tile(&self) -> Tile {
        Tile {
            level: 0,
            index: self.index,
            width: self.width,
        }
    }

    /// The entry indexes `[start, end)` in the bundle.
    pub fn entry_range(&self) -> Range<u64> {
        self.tile().leaf_range()
    }
}

/// Writes `<N>[.p/<W>]` with N in three-digit groups, all but the last prefixed by `x`:
/// 1234067 becomes `x001/x234/067`, 5 becomes `005`.
fn push_index_and_width(path: &mut String, index: u64, width: u16) {
    let digits = index.to_string();
    let padded = format!("{digits:0>len$}", len = digits.len().div_ceil(3) * 3);
    let groups: Vec<&str> = padded
        .as_bytes()
        .chunks(3)
        .filter_map(|group| std::str::from_utf8(group).ok())
        .collect();
    for (i, group) in groups.iter().enumerate() {
        if i + 1 < groups.len() {
            path.push('x');
            path.push_str(group);
            path.push('/');
        } else {
            path.push_str(group);
        }
    }
    if width < TILE_WIDTH {
        // Writing into a String cannot fail.
        let _ = write!(path, ".p/{width}");
    }
}

/// Parses a tlog-tiles path (without the log's URL prefix), refusing every non-canonical
/// spelling so that each resource has exactly one path.
pub fn parse_tile_path(path: &str) -> Result<TileResource, TilePathError> {
    let shape = || TilePathError::Shape {
        path: path.to_string(),
    };
    let rest = path.strip_prefix("tile/").ok_or_else(shape)?;
    let (kind, rest) = rest.split_once('/').ok_or_else(shape)?;
    let (index_text, width) = match rest.split_once(".p/") {
        Some((index_text, width_text)) => (index_text, parse_width(width_text)?),
        None => (rest, TILE_WIDTH),
    };
    if index_text.is_empty() {
        return Err(shape());
    }
    let index = parse_index(index_text)?;
    if kind == "entries" {
        return Ok(TileResource::Entries(EntryBundle::new(index, width)?));
    }
    let level = parse_level(kind)?;
    Ok(TileResource::Hashes(Tile::new(level, index, width)?))
}

fn is_canonical_decimal(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'))
}

fn parse_level(text: &str) -> Result<u8, TilePathError> {
    let error = || TilePathError::Level {
        text: text.to_string(),
    };
    if !is_canonical_decimal(text) {
        return Err(error());
    }
    text.parse::<u8>()
        .ok()
        .filter(|level| *level <= MAX_TILE_LEVEL)
        .ok_or_else(error)
}

fn parse_width(text: &str) -> Result<u16, TilePathError> {
    let error = || TilePathError::Width {
        text: text.to_string(),
    };
    if !is_canonical_decimal(text) {
        return Err(error());
    }
    text.parse::<u16>()
        .ok()
        .filter(|width| (1..TILE_WIDTH).contains(width))
        .ok_or_else(error)
}

fn parse_index(text: &str) -> Result<u64, TilePathError> {
    let elements: Vec<&str> = text.split('/').collect();
    let mut index: u64 = 0;
    for (i, element) in elements.iter().enumerate() {
        let error = || TilePathError::Index {
            element: element.to_string(),
        };
        let is_last = i + 1 == elements.len();
        let group = if is_last {
            *element
        } else {
            element.strip_prefix('x').ok_or_else(error)?
        };
        if group.len() != 3 || !group.bytes().all(|b| b.is_ascii_digit()) {
            return Err(error());
        }
        // A leading all-zero group would give the same number a second spelling.
        if i == 0 && !is_last && group == "000" {
            return Err(error());
        }
        let value: u64 = group.parse().map_err(|_| error())?;
        index = index
            .checked_mul(1000)
            .and_then(|index| index.checked_add(value))
            .ok_or_else(error)?;
    }
    Ok(index)
}

/// The tile holding stored hash `stored_hash_index`, and the range of hash positions in that
/// tile whose subtree hash it is. Defined for the stored hashes of trees of at most
/// [`super::MAX_TREE_SIZE`] leaves.
///
/// Hashes of tree levels that are multiples of 8 sit in a tile directly (a range of one);
/// the others are the root of `2^(level mod 8)` consecutive tile hashes, to be recombined with
/// [`Tile::subtree_hash`]. The tile returned is the narrowest one containing that range;
/// any wider tile of the same level and index holds the same hashes at the same positions.
pub fn tile_for_index(stored_hash_index: u64) -> (Tile, Range<usize>) {
    let (tree_level, n) = split_stored_hash_index(stored_hash_index);
    let level = tree_level / TILE_HEIGHT;
    let height_in_tile = tree_level % TILE_HEIGHT;
    let first = n << height_in_tile;
    let count = 1usize << height_in_tile;
    let index = first >> TILE_HEIGHT;
    // The mask keeps the offset below 256.
    let offset = (first & u64::from(TILE_WIDTH - 1)) as usize;
    // offset + count is at most 256 because the subtree is aligned within the tile.
    let width = (offset + count) as u16;
    let tile = Tile {
        level,
        index,
        width,
    };
    (tile, offset..offset + count)
}

/// Hashes at tile level `level` in a tree of `size` leaves.
fn hashes_at_level(size: u64, level: u8) -> u64 {
    size.checked_shr(u32::from(TILE_HEIGHT) * u32::from(level))
        .unwrap_or(0)
}

/// The tiles that together hold every stored hash of a tree of `size` leaves: all full tiles
/// and, per level, the partial tile of `floor(size / 256^L) mod 256` hashes if that is not 0.
///
/// A tree of 70 000 leaves gives 273 full level-0 tiles, a level-0 tile of width 112, a full
/// level-1 tile, a level-1 tile of width 17 and a level-2 tile of width 1.
pub fn tiles_for_size(size: u64) -> Vec<Tile> {
    tiles_between(0, size)
}

/// The tiles of a tree of `new_size` leaves that a tree of `old_size` leaves does not have
/// with the same contents: what to write after growing the log from `old_size` to
/// `new_size`. Empty when `new_size <= old_size`.
pub fn tiles_between(old_size: u64, new_size: u64) -> Vec<Tile> {
    let mut tiles = Vec::new();
    for level in 0..=MAX_TILE_LEVEL {
        let old_count = hashes_at_level(old_size, level);
        let new_count = hashes_at_level(new_size, level);
        if new_count <= old_count {
            // A level that did not grow has no new hashes, and neither has any above it.
            break;
        }
        // The first tile that changes is the one the old tree left partial (or the next
        // empty one); every tile up to the one holding the new last hash follows.
        let width = u64::from(TILE_WIDTH);
        for index in old_count / width..=(new_count - 1) / width {
            let remaining = new_count - index * width;
            // `min` keeps the width at most 256.
            let tile_width = remaining.min(width) as u16;
            tiles.push(Tile {
                level,
                index,
                width: tile_width,
            });
        }
    }
    tiles
}

/// The entry bundles of a tree of `size` entries.
pub fn entry_bundles_for_size(size: u64) -> Vec<EntryBundle> {
    tiles_between(0, size)
        .into_iter()
        .filter(|tile| tile.level == 0)
        .map(|tile| EntryBundle {
            index: tile.index,
            width: tile.width,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_groups_follow_the_spec() {
        let cases = [
            (0, "000"),
            (5, "005"),
            (999, "999"),
            (1000, "x001/000"),
            (67_000, "x067/000"),
            (1_234_067, "x001/x234/067"),
        ];
        for (index, expected) in cases {
            let mut path = String::new();
            push_index_and_width(&mut path, index, TILE_WIDTH);
            assert_eq!(path, expected, "index {index}");
            assert_eq!(parse_index(expected), Ok(index));
        }
    }
}
