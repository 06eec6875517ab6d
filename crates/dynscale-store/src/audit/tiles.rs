//! The log's Merkle hashes as C2SP tlog-tiles: the in-memory right edge of the tree
//! (hashes not yet in a full tile file), tile file IO, and a [`HashReader`] over both
//! for `dynscale_core::merkle`'s proofs.
//!
//! Only tile rows are kept: level `L` holds the hashes of tree level `8·L`. The seven
//! levels between are folded from a row on demand, as tlog-tiles intends; that costs at
//! most 127 node hashes per stored hash read.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use dynscale_core::merkle::{
    HASH_SIZE, Hash, HashReader, MAX_TILE_LEVEL, TILE_HEIGHT, TILE_WIDTH, Tile, empty_root,
    node_hash, stored_hash_count, tile_for_index,
};

use super::disk::{Disk, read_exact_at};

/// Directory of the tile files, inside the audit directory.
pub(crate) const TILE_DIR: &str = "tile";

const WIDTH: usize = TILE_WIDTH as usize;
const LEVELS: usize = MAX_TILE_LEVEL as usize + 1;

/// The hashes of one tile level not yet in full tile files: every hash of that tree
/// level from the start of tile `from` on. Usually about one tile; more while the tile
/// thread is behind, or while writing tiles fails (a full disk), so nothing is lost
/// before it is on disk.
#[derive(Debug, Clone, Default)]
pub(crate) struct TileRow {
    pub(crate) from: u64,
    /// The row's hashes after the first `written`, which belong to tiles already in
    /// files. Those are dropped in one move once they are as many as the rest, so a
    /// row far behind costs no more per tile than one that is not.
    hashes: Vec<Hash>,
    written: usize,
}

impl TileRow {
    /// The hashes from the start of tile `from` on.
    pub(crate) fn hashes(&self) -> &[Hash] {
        self.hashes.get(self.written..).unwrap_or_default()
    }

    fn push(&mut self, hash: Hash) {
        self.hashes.push(hash);
    }

    /// Lets go of the first tile's hashes, its file written.
    fn drop_tile(&mut self) {
        self.written += WIDTH;
        self.from += 1;
        if self.written >= self.hashes.len().saturating_sub(self.written) {
            self.hashes.drain(..self.written);
            self.written = 0;
        }
    }
}

impl PartialEq for TileRow {
    fn eq(&self, other: &Self) -> bool {
        self.from == other.from && self.hashes() == other.hashes()
    }
}

impl Eq for TileRow {}

/// The tree as the writer grows it: its size, the right edge (the last complete
/// subtree at every level) and the tile rows in memory.
#[derive(Debug, Clone)]
pub(crate) struct TreeState {
    size: u64,
    right_edge: [Hash; 64],
    rows: [TileRow; LEVELS],
}

impl TreeState {
    /// The empty tree.
    pub(crate) fn new() -> Self {
        Self {
            size: 0,
            right_edge: [Hash::default(); 64],
            rows: Default::default(),
        }
    }

    /// Entries hashed.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Appends the next leaf: stores its hash and that of every subtree it completes.
    pub(crate) fn push_leaf(&mut self, leaf: Hash) {
        let index = self.size;
        let completed = index.trailing_ones() as usize;
        let mut current = leaf;
        self.rows[0].push(leaf);
        for level in 0..completed {
            // The subtree just completed at `level` is a right child; its left sibling
            // is the previous complete subtree at that level, still on the right edge.
            let left = self.right_edge[level];
            self.right_edge[level] = current;
            current = node_hash(&left, &current);
            let tree_level = level + 1;
            if tree_level.is_multiple_of(usize::from(TILE_HEIGHT)) {
                let row = tree_level / usize::from(TILE_HEIGHT);
                if let Some(row) = self.rows.get_mut(row) {
                    row.push(current);
                }
            }
        }
        self.right_edge[completed] = current;
        self.size += 1;
    }

    /// The root hash of the tree at its current size.
    pub(crate) fn root(&self) -> Hash {
        let mut root: Option<Hash> = None;
        for level in 0..64 {
            if self.size & (1 << level) != 0 {
                let subtree = self.right_edge[level];
                root = Some(match root {
                    None => subtree,
                    Some(right) => node_hash(&subtree, &right),
                });
            }
        }
        root.unwrap_or_else(empty_root)
    }

    /// Hashes held in memory, not yet in full tile files: the derived bytes still to be
    /// written for the entries appended so far.
    pub(crate) fn hashes_in_memory(&self) -> u64 {
        self.rows.iter().map(|row| row.hashes().len() as u64).sum()
    }

    /// Full tiles still only in memory, with their bytes, to be written.
    pub(crate) fn full_tiles(&self) -> Vec<(Tile, Vec<u8>)> {
        let mut tiles = Vec::new();
        for (level, row) in self.rows.iter().enumerate() {
            for (k, chunk) in row.hashes().chunks_exact(WIDTH).enumerate() {
                if let Ok(tile) = Tile::new(level as u8, row.from + k as u64, TILE_WIDTH) {
                    tiles.push((tile, tile_bytes(chunk)));
                }
            }
        }
        tiles
    }

    /// Where each level's tiles in memory start: the first tile index per level that
    /// [`TreeState::new_full_tiles`] has not handed out, for a tree just recovered.
    pub(crate) fn first_tiles(&self) -> Vec<u64> {
        self.rows.iter().map(|row| row.from).collect()
    }

    /// The full tiles in memory from tile `next[level]` on at each level, with their
    /// bytes; `next` moves past them, so each full tile is handed out once.
    pub(crate) fn new_full_tiles(&self, next: &mut [u64]) -> Vec<(Tile, Vec<u8>)> {
        let mut tiles = Vec::new();
        for ((level, row), next) in self.rows.iter().enumerate().zip(next.iter_mut()) {
            let full = row.from + (row.hashes().len() / WIDTH) as u64;
            for index in (*next).max(row.from)..full {
                let start = usize::try_from(index - row.from).unwrap_or(usize::MAX) * WIDTH;
                let (Some(hashes), Ok(tile)) = (
                    row.hashes().get(start..start + WIDTH),
                    Tile::new(level as u8, index, TILE_WIDTH),
                ) else {
                    break;
                };
                tiles.push((tile, tile_bytes(hashes)));
            }
            *next = (*next).max(full);
        }
        tiles
    }

    /// Forgets a full tile's hashes once its file is written (oldest first per level).
    pub(crate) fn tile_written(&mut self, tile: &Tile) {
        let row = &mut self.rows[usize::from(tile.level())];
        if tile.index() == row.from && row.hashes().len() >= WIDTH {
            row.drop_tile();
        }
    }

    /// The partial tiles of the tree at its current size: for each level whose
    /// rightmost tile is not full, that tile and its bytes.
    pub(crate) fn partial_tiles(&self) -> Vec<(Tile, Vec<u8>)> {
        let mut tiles = Vec::new();
        for (level, row) in self.rows.iter().enumerate() {
            let full = row.hashes().len() / WIDTH;
            let width = row.hashes().len() % WIDTH;
            if width == 0 {
                continue;
            }
            // The width is below 256, so it fits in u16.
            if let Ok(tile) = Tile::new(level as u8, row.from + full as u64, width as u16) {
                tiles.push((tile, tile_bytes(&row.hashes()[full * WIDTH..])));
            }
        }
        tiles
    }

    /// A tree of `size` entries whose hashes are all in full tile files, except the
    /// partial rows, which are rebuilt here by reading the full tiles one level down.
    /// `size` must be a multiple of 256. Used at open to resume without rehashing the
    /// entries that full tiles already cover.
    pub(crate) fn from_tiles(disk: &dyn Disk, dir: &Path, size: u64) -> io::Result<Self> {
        let mut state = Self::new();
        state.size = size;
        for level in 0..LEVELS {
            let shift = u32::from(TILE_HEIGHT) * level as u32;
            let count = size.checked_shr(shift).unwrap_or(0);
            let row = &mut state.rows[level];
            row.from = count / WIDTH as u64;
            if level == 0 {
                continue;
            }
            // Each hash of this row is the root of a full tile one level down.
            for n in row.from * WIDTH as u64..count {
                let below = Tile::new(level as u8 - 1, n, TILE_WIDTH)
                    .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
                let path = dir.join(below.path());
                let mut bytes = vec![0u8; WIDTH * HASH_SIZE];
                read_exact_at(&*disk.open_read(&path)?, &mut bytes, 0)?;
                row.push(fold(&parse_hashes(&bytes)));
            }
        }
        // The right edge: for each set bit of `size`, the last complete subtree of
        // that height, read like any stored hash.
        let lock = RwLock::new(state);
        let mut edge = Vec::new();
        {
            let reader = TileHashes::new(disk, dir, &lock);
            for level in 0..64u8 {
                if size & (1 << level) != 0 {
                    let n = (size >> level) - 1;
                    let index = dynscale_core::merkle::stored_hash_index(level, n);
                    let hash = reader
                        .read_hashes(&[index])
                        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
                    edge.push((usize::from(level), hash));
                }
            }
        }
        let mut state = lock.into_inner().unwrap_or_else(PoisonError::into_inner);
        for (level, hashes) in edge {
            if let Some(hash) = hashes.first() {
                state.right_edge[level] = *hash;
            }
        }
        Ok(state)
    }
}

/// The bytes of a tile: its hashes one after the other.
pub(crate) fn tile_bytes(hashes: &[Hash]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(hashes.len() * HASH_SIZE);
    for hash in hashes {
        bytes.extend_from_slice(hash.as_bytes());
    }
    bytes
}

/// Splits tile bytes into hashes (a trailing partial hash is ignored).
pub(crate) fn parse_hashes(bytes: &[u8]) -> Vec<Hash> {
    bytes
        .chunks_exact(HASH_SIZE)
        .filter_map(|chunk| Hash::from_slice(chunk).ok())
        .collect()
}

/// The root of a complete subtree given its leaves (a power-of-two count).
pub(crate) fn fold(hashes: &[Hash]) -> Hash {
    let mut level = hashes.to_vec();
    while level.len() > 1 {
        level = level
            .chunks_exact(2)
            .map(|pair| node_hash(&pair[0], &pair[1]))
            .collect();
    }
    level.pop().unwrap_or_else(empty_root)
}

/// Writes a tile file, creating its directories when missing. Tiles are not synced
/// here: the tile thread syncs them in bulk before each checkpoint.
pub(crate) fn write_tile(
    disk: &dyn Disk,
    dir: &Path,
    tile: &Tile,
    bytes: &[u8],
) -> io::Result<PathBuf> {
    let path = dir.join(tile.path());
    match disk.write_file(&path, bytes) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                disk.create_dir_all(parent)?;
            }
            disk.write_file(&path, bytes)?;
        }
        other => other?,
    }
    Ok(path)
}

/// Why a stored hash could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TileReadError {
    /// The hash is beyond the tree's current size.
    #[error("stored hash {index} requested, the tree has {stored}")]
    Missing { index: u64, stored: u64 },
    /// A tile file could not be read.
    #[error("reading tile {path} at {offset} ({needed} bytes)")]
    Io {
        path: PathBuf,
        offset: u64,
        needed: usize,
        #[source]
        source: io::Error,
    },
}

/// Stored hashes served from the in-memory rows and the full tile files.
#[derive(Debug)]
pub(crate) struct TileHashes<'a> {
    disk: &'a dyn Disk,
    dir: &'a Path,
    tree: &'a RwLock<TreeState>,
}

impl<'a> TileHashes<'a> {
    pub(crate) fn new(disk: &'a dyn Disk, dir: &'a Path, tree: &'a RwLock<TreeState>) -> Self {
        Self { disk, dir, tree }
    }
}

impl HashReader for TileHashes<'_> {
    type Error = TileReadError;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TileReadError> {
        let mut out = vec![Hash::default(); indexes.len()];
        let mut from_files = Vec::new();
        {
            // Copy what memory holds under the lock; files are read after releasing it.
            // A tile leaves memory only after its file is written, so whatever is not
            // in memory now is in a file.
            let tree = self.tree.read().unwrap_or_else(PoisonError::into_inner);
            let stored = stored_hash_count(tree.size);
            for (position, &index) in indexes.iter().enumerate() {
                if index >= stored {
                    return Err(TileReadError::Missing { index, stored });
                }
                let (tile, range) = tile_for_index(index);
                let row = &tree.rows[usize::from(tile.level())];
                if tile.index() >= row.from {
                    let base = ((tile.index() - row.from) as usize) * WIDTH;
                    let slice = row
                        .hashes()
                        .get(base + range.start..base + range.end)
                        .ok_or(TileReadError::Missing { index, stored })?;
                    out[position] = fold(slice);
                } else {
                    from_files.push((position, tile, range));
                }
            }
        }
        for (position, tile, range) in from_files {
            let full = Tile::new(tile.level(), tile.index(), TILE_WIDTH).unwrap_or(tile);
            let path = self.dir.join(full.path());
            let offset = (range.start * HASH_SIZE) as u64;
            let mut bytes = vec![0u8; range.len() * HASH_SIZE];
            let read = self
                .disk
                .open_read(&path)
                .and_then(|file| read_exact_at(&*file, &mut bytes, offset));
            if let Err(source) = read {
                return Err(TileReadError::Io {
                    path,
                    offset,
                    needed: bytes.len(),
                    source,
                });
            }
            out[position] = fold(&parse_hashes(&bytes));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynscale_core::merkle::{MemoryHashes, leaf_hash, prove_consistency, prove_inclusion};

    #[test]
    fn incremental_state_matches_the_reference_stored_hashes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let disk = super::super::disk::FsDisk;
        let mut reference = MemoryHashes::new();
        let tree = RwLock::new(TreeState::new());
        for i in 0..70_000u64 {
            let leaf = leaf_hash(&i.to_le_bytes());
            reference.append(leaf);
            let mut state = tree.write().expect("lock");
            state.push_leaf(leaf);
            // Write full tiles as the writer does, so reads mix memory and files.
            for (tile, bytes) in state.full_tiles() {
                write_tile(&disk, dir.path(), &tile, &bytes).expect("write tile");
                state.tile_written(&tile);
            }
        }
        let reader = TileHashes::new(&disk, dir.path(), &tree);
        for size in [1u64, 2, 255, 256, 257, 65_535, 65_536, 65_537, 70_000] {
            assert_eq!(
                dynscale_core::merkle::tree_hash(size, &reader).expect("tiles"),
                dynscale_core::merkle::tree_hash(size, &reference).expect("memory"),
                "size {size}"
            );
            let index = size / 3;
            assert_eq!(
                prove_inclusion(size, index, &reader).expect("tiles"),
                prove_inclusion(size, index, &reference).expect("memory")
            );
            assert_eq!(
                prove_consistency(size / 2, size, &reader).expect("tiles"),
                prove_consistency(size / 2, size, &reference).expect("memory")
            );
        }
        let state = tree.read().expect("lock").clone();
        assert_eq!(
            state.root(),
            dynscale_core::merkle::tree_hash(70_000, &reference).expect("memory")
        );
        // Resuming from the tiles at a multiple of 256 gives the same state as having
        // appended every entry.
        let resumed = TreeState::from_tiles(&disk, dir.path(), 69_888).expect("resume");
        let mut resumed = resumed;
        for i in 69_888..70_000u64 {
            resumed.push_leaf(leaf_hash(&i.to_le_bytes()));
        }
        // The right edge differs only at levels the size's bits do not use.
        assert_eq!(resumed.size, state.size);
        assert_eq!(resumed.rows, state.rows);
        assert_eq!(resumed.root(), state.root());
    }

    /// The tile thread gets each full tile once, in order, whether or not the ones
    /// before were written yet, and the same bytes `full_tiles` gives.
    #[test]
    fn new_full_tiles_hands_out_each_full_tile_once() {
        let mut state = TreeState::new();
        let mut next = state.first_tiles();
        let push = |state: &mut TreeState, from: u64, to: u64| {
            for i in from..to {
                state.push_leaf(leaf_hash(&i.to_le_bytes()));
            }
        };
        push(&mut state, 0, 3 * 256 + 10);
        let first = state.new_full_tiles(&mut next);
        let indexes: Vec<(u8, u64)> = first.iter().map(|(t, _)| (t.level(), t.index())).collect();
        assert_eq!(indexes, vec![(0, 0), (0, 1), (0, 2)]);
        assert_eq!(first, state.full_tiles());
        assert!(
            state.new_full_tiles(&mut next).is_empty(),
            "handed out twice"
        );
        // Written or not, a tile handed out is not handed out again.
        state.tile_written(&first[0].0);
        push(&mut state, 3 * 256 + 10, 4 * 256);
        let second = state.new_full_tiles(&mut next);
        let indexes: Vec<(u8, u64)> = second.iter().map(|(t, _)| (t.level(), t.index())).collect();
        assert_eq!(indexes, vec![(0, 3)]);
        assert_eq!(Some(&second[0]), state.full_tiles().last());
        // A level-1 tile completes after 256 level-0 tiles.
        push(&mut state, 4 * 256, 256 * 256);
        let third = state.new_full_tiles(&mut next);
        assert_eq!(third.len(), 256 - 4 + 1);
        assert_eq!(
            third.last().map(|(t, _)| (t.level(), t.index())),
            Some((1, 0))
        );
    }

    /// Tiles written long after they filled, many at a time, as when the tile thread is
    /// behind: reads still mix memory and files correctly, and the rows end up the same
    /// as when every tile is written at once.
    #[test]
    fn tiles_written_late_leave_the_same_state() {
        let dir = tempfile::tempdir().expect("temp dir");
        let disk = super::super::disk::FsDisk;
        let mut reference = MemoryHashes::new();
        let tree = RwLock::new(TreeState::new());
        let mut eager = TreeState::new();
        let mut next = tree.read().expect("lock").first_tiles();
        let mut behind = Vec::new();
        for i in 0..(40 * 256 + 77) as u64 {
            let leaf = leaf_hash(&i.to_le_bytes());
            reference.append(leaf);
            eager.push_leaf(leaf);
            for (tile, _) in eager.full_tiles() {
                eager.tile_written(&tile);
            }
            let mut state = tree.write().expect("lock");
            state.push_leaf(leaf);
            behind.extend(state.new_full_tiles(&mut next));
            // Every 13 tiles, write what is behind.
            if behind.len() >= 13 {
                for (tile, bytes) in behind.drain(..) {
                    write_tile(&disk, dir.path(), &tile, &bytes).expect("write tile");
                    state.tile_written(&tile);
                }
            }
        }
        let reader = TileHashes::new(&disk, dir.path(), &tree);
        let size = 40 * 256 + 77;
        for index in [0, 255, 256, 3000, size - 1] {
            assert_eq!(
                prove_inclusion(size, index, &reader).expect("tiles"),
                prove_inclusion(size, index, &reference).expect("memory"),
                "index {index}"
            );
        }
        let mut state = tree.write().expect("lock");
        for (tile, bytes) in behind.drain(..) {
            write_tile(&disk, dir.path(), &tile, &bytes).expect("write tile");
            state.tile_written(&tile);
        }
        assert_eq!(state.rows, eager.rows);
        assert_eq!(state.hashes_in_memory(), eager.hashes_in_memory());
    }
}
