//! Tests of the audit log's Merkle core against the RFC 6962 reference vectors, an
//! independent naive RFC 9162 implementation, the C2SP tiles and checkpoint specs, and a
//! pinned signed checkpoint.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::OnceLock;

use dynscale_core::merkle::{
    Checkpoint, CheckpointError, Hash, HashReader, MemoryHashes, NoteError, ProofError, Signer,
    TILE_WIDTH, Tile, TileResource, Verifier, empty_root, leaf_hash, node_hash, open_checkpoint,
    parse_tile_path, prove_consistency, prove_inclusion, sign_checkpoint, stored_hash_count,
    stored_hash_index, tile_for_index, tiles_between, tiles_for_size, tree_hash,
    verify_consistency, verify_inclusion,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

// ---------------------------------------------------------------------------------------
// Reference vectors

#[derive(serde::Deserialize)]
struct Vectors {
    leaf_inputs_hex: Vec<String>,
    roots_hex: BTreeMap<u64, Hash>,
    inclusion: Vec<InclusionVector>,
    consistency: Vec<ConsistencyVector>,
}

#[derive(serde::Deserialize)]
struct InclusionVector {
    leaf_index: u64,
    tree_size: u64,
    proof: Vec<Hash>,
}

#[derive(serde::Deserialize)]
struct ConsistencyVector {
    old_size: u64,
    new_size: u64,
    proof: Vec<Hash>,
}

fn load_vectors() -> Vectors {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata/rfc6962-vectors.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| {
        panic!(
            "the RFC 6962 reference vectors must exist at {path} (the shared/ directory beside \
             the repository is part of its environment): {error}"
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{path} is malformed: {error}"))
}

fn decode_hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length in {text:?}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("vector hex is valid"))
        .collect()
}

#[test]
fn reproduces_rfc6962_reference_vectors() {
    let vectors = load_vectors();
    let leaves: Vec<Hash> = vectors
        .leaf_inputs_hex
        .iter()
        .map(|input| leaf_hash(&decode_hex(input)))
        .collect();
    assert_eq!(leaves.len(), 8);
    let log = MemoryHashes::from_leaf_hashes(leaves.iter().copied());
    assert_eq!(vectors.roots_hex.len(), 9, "roots for sizes 0..=8");
    for (&size, root) in &vectors.roots_hex {
        assert_eq!(
            tree_hash(size, &log).expect("in range"),
            *root,
            "root of size {size}"
        );
    }

    assert!(!vectors.inclusion.is_empty());
    for vector in &vectors.inclusion {
        let (index, size) = (vector.leaf_index, vector.tree_size);
        let proof = prove_inclusion(size, index, &log).expect("in range");
        assert_eq!(proof, vector.proof, "inclusion of {index} in {size}");
        let root = vectors.roots_hex[&size];
        let leaf = leaves[index as usize];
        assert_eq!(
            verify_inclusion(index, size, &leaf, &vector.proof, &root),
            Ok(())
        );
    }

    assert!(!vectors.consistency.is_empty());
    for vector in &vectors.consistency {
        let (old, new) = (vector.old_size, vector.new_size);
        let proof = prove_consistency(old, new, &log).expect("in range");
        assert_eq!(proof, vector.proof, "consistency {old} -> {new}");
        let (old_root, new_root) = (vectors.roots_hex[&old], vectors.roots_hex[&new]);
        assert_eq!(
            verify_consistency(old, new, &old_root, &new_root, &vector.proof),
            Ok(())
        );
    }
}

// ---------------------------------------------------------------------------------------
// An independent, naive RFC 9162 §2.1 implementation over a vector of leaf hashes. It
// follows the RFC's recursive definitions literally; the memo only avoids recomputing
// MTH of the same leaf range, which all tree sizes of one test share.

struct Naive {
    leaves: Vec<Hash>,
    memo: HashMap<(usize, usize), Hash>,
}

/// The largest power of two smaller than n (n > 1).
fn naive_split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

impl Naive {
    /// MTH(D[lo:hi]).
    fn mth(&mut self, lo: usize, hi: usize) -> Hash {
        if let Some(hash) = self.memo.get(&(lo, hi)) {
            return *hash;
        }
        let hash = match hi - lo {
            0 => empty_root(),
            1 => self.leaves[lo],
            n => {
                let k = naive_split(n);
                let left = self.mth(lo, lo + k);
                let right = self.mth(lo + k, hi);
                node_hash(&left, &right)
            }
        };
        self.memo.insert((lo, hi), hash);
        hash
    }

    /// PATH(m, D[lo:hi]).
    fn path(&mut self, m: usize, lo: usize, hi: usize) -> Vec<Hash> {
        let n = hi - lo;
        if n == 1 {
            return Vec::new();
        }
        let k = naive_split(n);
        if m < k {
            let mut path = self.path(m, lo, lo + k);
            path.push(self.mth(lo + k, hi));
            path
        } else {
            let mut path = self.path(m - k, lo + k, hi);
            path.push(self.mth(lo, lo + k));
            path
        }
    }

    /// SUBPROOF(m, D[lo:hi], b).
    fn subproof(&mut self, m: usize, lo: usize, hi: usize, b: bool) -> Vec<Hash> {
        let n = hi - lo;
        if m == n {
            return if b {
                Vec::new()
            } else {
                vec![self.mth(lo, hi)]
            };
        }
        let k = naive_split(n);
        if m <= k {
            let mut proof = self.subproof(m, lo, lo + k, b);
            proof.push(self.mth(lo + k, hi));
            proof
        } else {
            let mut proof = self.subproof(m - k, lo + k, hi, false);
            proof.push(self.mth(lo, lo + k));
            proof
        }
    }

    /// PROOF(m, D[n]) for 0 < m <= n.
    fn consistency(&mut self, m: usize, n: usize) -> Vec<Hash> {
        self.subproof(m, 0, n, true)
    }
}

/// A fixed-seed generator (SplitMix64), so every run checks the same leaves and samples.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

const MAX_SIZE: usize = 1000;

fn random_leaves(count: usize, seed: u64) -> Vec<Hash> {
    let mut rng = SplitMix(seed);
    (0..count)
        .map(|_| {
            let len = rng.below(40) as usize;
            let entry: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            leaf_hash(&entry)
        })
        .collect()
}

fn flipped(hash: &Hash, byte: usize, bit: u8) -> Hash {
    let mut bytes = hash.0;
    bytes[byte % 32] ^= 1 << (bit % 8);
    Hash(bytes)
}

/// Every single alteration of an inclusion claim must fail to verify.
fn assert_inclusion_alterations_fail(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
    rng: &mut SplitMix,
) {
    let context = format!("inclusion of {index} in {size}");
    for i in 0..proof.len() {
        let mut altered = proof.to_vec();
        altered[i] = flipped(&altered[i], rng.below(32) as usize, rng.below(8) as u8);
        assert!(
            verify_inclusion(index, size, leaf, &altered, root).is_err(),
            "{context}: flipped element {i}"
        );
        let mut shorter = proof.to_vec();
        shorter.remove(i);
        assert!(
            matches!(
                verify_inclusion(index, size, leaf, &shorter, root),
                Err(ProofError::WrongLength { .. })
            ),
            "{context}: dropped element {i}"
        );
    }
    for position in [0, proof.len()] {
        let mut longer = proof.to_vec();
        longer.insert(position, *root);
        assert!(
            verify_inclusion(index, size, leaf, &longer, root).is_err(),
            "{context}: extra element at {position}"
        );
    }
    assert!(verify_inclusion(index, size, &flipped(leaf, 3, 1), proof, root).is_err());
    assert!(verify_inclusion(index, size, leaf, proof, &flipped(root, 31, 7)).is_err());
    for wrong_index in [index.wrapping_sub(1), index + 1] {
        assert!(
            verify_inclusion(wrong_index, size, leaf, proof, root).is_err(),
            "{context}: accepted at index {wrong_index}"
        );
    }
    // Sizes one apart can share the audit path's shape (a proof for leaf 0 of 3 leaves is
    // also the proof for leaf 0 of 4), so only the root tells them apart; doubling or
    // halving the size always changes the path length.
    let mut wrong_sizes = vec![size * 2];
    if size / 2 > index {
        wrong_sizes.push(size / 2);
    }
    for wrong_size in wrong_sizes {
        assert!(
            verify_inclusion(index, wrong_size, leaf, proof, root).is_err(),
            "{context}: accepted at size {wrong_size}"
        );
    }
}

#[test]
fn every_size_to_1000_matches_the_naive_tree() {
    let leaves = random_leaves(MAX_SIZE, 0x5eed_0001);
    let mut naive = Naive {
        leaves: leaves.clone(),
        memo: HashMap::new(),
    };
    let mut rng = SplitMix(0x5eed_0002);
    let mut log = MemoryHashes::new();
    let mut inclusion_checks = 0;
    for size in 1..=MAX_SIZE {
        log.append(leaves[size - 1]);
        let root = tree_hash(size as u64, &log).expect("in range");
        assert_eq!(root, naive.mth(0, size), "root of size {size}");

        let mut indexes: BTreeSet<usize> = [0, size - 1, size / 2].into_iter().collect();
        for _ in 0..3 {
            indexes.insert(rng.below(size as u64) as usize);
        }
        // Alterations are checked on every sampled proof of the small trees and on one
        // random proof per larger size, which keeps the debug-build test fast.
        let altered_index = rng.below(size as u64) as usize;
        indexes.insert(altered_index);
        for index in indexes {
            let proof = prove_inclusion(size as u64, index as u64, &log).expect("in range");
            assert_eq!(
                proof,
                naive.path(index, 0, size),
                "inclusion of {index} in {size}"
            );
            assert_eq!(
                verify_inclusion(index as u64, size as u64, &leaves[index], &proof, &root),
                Ok(()),
                "inclusion of {index} in {size}"
            );
            if size <= 64 || index == altered_index {
                assert_inclusion_alterations_fail(
                    index as u64,
                    size as u64,
                    &leaves[index],
                    &proof,
                    &root,
                    &mut rng,
                );
            }
            inclusion_checks += 1;
        }
    }
    assert!(inclusion_checks > 3 * MAX_SIZE);
}

/// Every single alteration of a consistency claim must fail to verify.
fn assert_consistency_alterations_fail(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
    rng: &mut SplitMix,
) {
    let context = format!("consistency {old} -> {new}");
    for i in 0..proof.len() {
        let mut altered = proof.to_vec();
        altered[i] = flipped(&altered[i], rng.below(32) as usize, rng.below(8) as u8);
        assert!(
            verify_consistency(old, new, old_root, new_root, &altered).is_err(),
            "{context}: flipped element {i}"
        );
        let mut shorter = proof.to_vec();
        shorter.remove(i);
        assert!(
            verify_consistency(old, new, old_root, new_root, &shorter).is_err(),
            "{context}: dropped element {i}"
        );
    }
    for position in [0, proof.len()] {
        let mut longer = proof.to_vec();
        longer.insert(position, *new_root);
        assert!(
            verify_consistency(old, new, old_root, new_root, &longer).is_err(),
            "{context}: extra element at {position}"
        );
    }
    assert!(
        verify_consistency(old, new, &flipped(old_root, 0, 0), new_root, proof).is_err(),
        "{context}: wrong old root"
    );
    assert!(
        verify_consistency(old, new, old_root, &flipped(new_root, 5, 2), proof).is_err(),
        "{context}: wrong new root"
    );
    // As with inclusion, new sizes one apart can share the proof's shape (1 -> 3 and
    // 1 -> 4 both take [leaf 1, leaf 2]); doubling or halving the new size cannot.
    let wrong_sizes = [
        (old + 1, new),
        (old.wrapping_sub(1), new),
        (old, new * 2),
        (old, new / 2),
    ];
    for (wrong_old, wrong_new) in wrong_sizes {
        if wrong_old == 0 || wrong_old > wrong_new || wrong_new == u64::MAX {
            continue;
        }
        assert!(
            verify_consistency(wrong_old, wrong_new, old_root, new_root, proof).is_err(),
            "{context}: accepted as {wrong_old} -> {wrong_new}"
        );
    }
}

fn check_consistency_pair(
    (old, new): (usize, usize),
    log: &MemoryHashes,
    naive: &mut Naive,
    roots: &[Hash],
    alterations: Option<&mut SplitMix>,
) {
    let proof = prove_consistency(old as u64, new as u64, log).expect("in range");
    assert_eq!(
        proof,
        naive.consistency(old, new),
        "consistency {old} -> {new}"
    );
    let (old_root, new_root) = (roots[old], roots[new]);
    assert_eq!(
        verify_consistency(old as u64, new as u64, &old_root, &new_root, &proof),
        Ok(()),
        "consistency {old} -> {new}"
    );
    if let Some(rng) = alterations.filter(|_| old < new) {
        assert_consistency_alterations_fail(
            old as u64, new as u64, &old_root, &new_root, &proof, rng,
        );
    }
}

#[test]
fn consistency_proofs_match_the_naive_tree() {
    let leaves = random_leaves(MAX_SIZE, 0x5eed_0003);
    let mut naive = Naive {
        leaves: leaves.clone(),
        memo: HashMap::new(),
    };
    let log = MemoryHashes::from_leaf_hashes(leaves.iter().copied());
    let roots: Vec<Hash> = (0..=MAX_SIZE).map(|size| naive.mth(0, size)).collect();
    let mut rng = SplitMix(0x5eed_0004);
    // Every pair among small trees, where the shapes vary most.
    for new in 1..=64 {
        for old in 1..=new {
            check_consistency_pair((old, new), &log, &mut naive, &roots, Some(&mut rng));
        }
    }
    // Random pairs over the whole range, and every size against its neighbours and the end.
    for _ in 0..2000 {
        let a = 1 + rng.below(MAX_SIZE as u64) as usize;
        let b = 1 + rng.below(MAX_SIZE as u64) as usize;
        let pair = (a.min(b), a.max(b));
        check_consistency_pair(pair, &log, &mut naive, &roots, Some(&mut rng));
    }
    for size in 1..MAX_SIZE {
        // Alterations of these are covered by the pairs above.
        check_consistency_pair((size, size + 1), &log, &mut naive, &roots, None);
        check_consistency_pair((size, MAX_SIZE), &log, &mut naive, &roots, None);
    }
    // From the empty tree the proof is empty and the old root is SHA-256("").
    for size in [1u64, 7, 1000] {
        assert_eq!(prove_consistency(0, size, &log).expect("in range"), vec![]);
        assert_eq!(
            verify_consistency(0, size, &empty_root(), &roots[size as usize], &[]),
            Ok(())
        );
    }
}

/// A reader that counts its calls, to pin that each operation reads in one batch.
struct CountingReader<'a> {
    inner: &'a MemoryHashes,
    calls: std::cell::Cell<usize>,
}

impl HashReader for CountingReader<'_> {
    type Error = <MemoryHashes as HashReader>::Error;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Self::Error> {
        self.calls.set(self.calls.get() + 1);
        self.inner.read_hashes(indexes)
    }
}

#[test]
fn proofs_read_stored_hashes_in_one_batch() {
    let log = MemoryHashes::from_leaf_hashes(random_leaves(777, 9));
    let reader = CountingReader {
        inner: &log,
        calls: std::cell::Cell::new(0),
    };
    prove_inclusion(777, 300, &reader).expect("in range");
    prove_consistency(300, 777, &reader).expect("in range");
    tree_hash(777, &reader).expect("in range");
    assert_eq!(reader.calls.get(), 3);
}

fn proptest_config() -> Config {
    Config {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x00d1_5ca1e),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Stored hashes of one 5000-leaf log, shared by the property cases: every smaller tree is
/// a prefix of it, so proofs for any size are built from a log that has grown past them.
fn large_log() -> &'static (Vec<Hash>, MemoryHashes) {
    static LOG: OnceLock<(Vec<Hash>, MemoryHashes)> = OnceLock::new();
    LOG.get_or_init(|| {
        let leaves = random_leaves(LARGE_SIZE as usize, 0x5eed_0005);
        let log = MemoryHashes::from_leaf_hashes(leaves.iter().copied());
        (leaves, log)
    })
}

const LARGE_SIZE: u64 = 5000;

proptest! {
    #![proptest_config(proptest_config())]

    /// Larger trees than the exhaustive test: proofs from stored hashes verify, a proof for
    /// one leaf never verifies for another, and a consistency proof never verifies against
    /// a different old tree.
    #[test]
    fn proofs_verify_in_larger_trees(
        size in 1u64..=LARGE_SIZE,
        index_seed: u64,
        old_seed: u64,
    ) {
        let (leaves, log) = large_log();
        let root = tree_hash(size, log).expect("in range");
        let index = index_seed % size;
        let proof = prove_inclusion(size, index, log).expect("in range");
        prop_assert_eq!(
            verify_inclusion(index, size, &leaves[index as usize], &proof, &root),
            Ok(())
        );
        let other = (index + 1) % size;
        if leaves[other as usize] != leaves[index as usize] {
            prop_assert!(
                verify_inclusion(index, size, &leaves[other as usize], &proof, &root).is_err()
            );
        }
        let old = 1 + old_seed % size;
        let old_root = tree_hash(old, log).expect("in range");
        let consistency = prove_consistency(old, size, log).expect("in range");
        prop_assert_eq!(
            verify_consistency(old, size, &old_root, &root, &consistency),
            Ok(())
        );
        if old > 1 && old < size {
            let other_root = tree_hash(old - 1, log).expect("in range");
            prop_assert!(
                verify_consistency(old, size, &other_root, &root, &consistency).is_err()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tiles

#[test]
fn tile_paths_follow_the_spec_examples() {
    let cases = [
        (Tile::new(0, 1_234_067, 256), "tile/0/x001/x234/067"),
        (Tile::new(0, 1_234_067, 17), "tile/0/x001/x234/067.p/17"),
        (Tile::new(1, 0, 256), "tile/1/000"),
        (Tile::new(2, 5, 1), "tile/2/005.p/1"),
        (Tile::new(0, 1000, 255), "tile/0/x001/000.p/255"),
    ];
    for (tile, path) in cases {
        let tile = tile.expect("valid tile");
        assert_eq!(tile.path(), path);
        assert_eq!(parse_tile_path(path), Ok(TileResource::Hashes(tile)));
    }
    let bundle = dynscale_core::merkle::EntryBundle::new(1_234_067, 112).expect("valid");
    assert_eq!(bundle.path(), "tile/entries/x001/x234/067.p/112");
    assert_eq!(
        parse_tile_path("tile/entries/x001/x234/067.p/112"),
        Ok(TileResource::Entries(bundle))
    );
    assert_eq!(bundle.entry_range(), 315_921_152..315_921_264);

    for bad in [
        "tile/0/1234067",
        "tile/0/x001/x234/67",
        "tile/0/x000/005",
        "tile/0/001/234",
        "tile/00/005",
        "tile/8/000",
        "tile/0/005.p/256",
        "tile/0/005.p/0",
        "tile/0/005.p/07",
        "tile/0/005.p/",
        "tile/0/",
        "tile/entries",
        "tiles/0/005",
        "tile/0/x18446744073709551615/000",
    ] {
        assert!(parse_tile_path(bad).is_err(), "{bad:?} was accepted");
    }
    assert!(Tile::new(0, 0, 0).is_err());
    assert!(Tile::new(0, 0, 257).is_err());
    assert!(Tile::new(8, 0, 1).is_err());
}

fn widths(tiles: &[Tile]) -> Vec<(u8, u64, u16)> {
    tiles
        .iter()
        .map(|tile| (tile.level(), tile.index(), tile.width()))
        .collect()
}

#[test]
fn tiles_for_size_matches_the_spec_examples() {
    // "A tree of size 70,000 will be represented by 273 full level 0 tiles, one partial level
    // 0 tile of width 112, one full level 1 tile, one partial level 1 tile of width 17, and
    // one partial level 2 tile of width 1."
    let tiles = tiles_for_size(70_000);
    let level0: Vec<&Tile> = tiles.iter().filter(|tile| tile.level() == 0).collect();
    assert_eq!(level0.len(), 274);
    assert_eq!(level0.iter().filter(|tile| tile.is_full()).count(), 273);
    assert_eq!(
        level0.last().map(|tile| (tile.index(), tile.width())),
        Some((273, 112))
    );
    let upper: Vec<_> = widths(&tiles)
        .into_iter()
        .filter(|(level, ..)| *level > 0)
        .collect();
    assert_eq!(upper, vec![(1, 0, 256), (1, 1, 17), (2, 0, 1)]);
    // "A tree of size 256 will be represented by a full level 0 tile and a partial level 1
    // tile of width 1."
    assert_eq!(widths(&tiles_for_size(256)), vec![(0, 0, 256), (1, 0, 1)]);
    assert!(tiles_for_size(0).is_empty());
    assert_eq!(widths(&tiles_for_size(1)), vec![(0, 0, 1)]);
}

#[test]
fn tiles_cover_exactly_the_stored_hashes() {
    for size in (1..=600).chain([65_535, 65_536, 65_537, 70_000]) {
        let tiles = tiles_for_size(size);
        let by_position: HashMap<(u8, u64), u16> = tiles
            .iter()
            .map(|tile| ((tile.level(), tile.index()), tile.width()))
            .collect();
        assert_eq!(
            by_position.len(),
            tiles.len(),
            "size {size}: duplicate tiles"
        );
        // Every stored hash is in one of the tiles, directly or as a subtree of its hashes.
        for index in 0..stored_hash_count(size) {
            let (tile, range) = tile_for_index(index);
            let width = by_position.get(&(tile.level(), tile.index()));
            assert!(
                width.is_some_and(|width| usize::from(*width) >= range.end),
                "size {size}: stored hash {index} needs {} hashes of {}",
                range.end,
                tile.path()
            );
        }
        // And the tiles hold nothing else: their hashes are distinct stored hashes of this
        // tree, exactly those of tree levels 0, 8, 16, ...
        let held: Vec<u64> = tiles.iter().flat_map(Tile::stored_hash_indexes).collect();
        let distinct: HashSet<u64> = held.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            held.len(),
            "size {size}: a hash is in two tiles"
        );
        assert!(held.iter().all(|index| *index < stored_hash_count(size)));
        let expected: u64 = (0..8).map(|level| size >> (8 * level)).sum();
        assert_eq!(held.len() as u64, expected, "size {size}");
    }
}

#[test]
fn tile_data_reproduces_every_stored_hash() {
    let size = 1300;
    let log = MemoryHashes::from_leaf_hashes(random_leaves(size, 77));
    let mut data: HashMap<(u8, u64), Vec<u8>> = HashMap::new();
    for tile in tiles_for_size(size as u64) {
        let hashes = log
            .read_hashes(&tile.stored_hash_indexes())
            .expect("stored");
        let bytes: Vec<u8> = hashes.iter().flat_map(|hash| hash.0).collect();
        assert_eq!(bytes.len(), tile.byte_len());
        data.insert((tile.level(), tile.index()), bytes);
    }
    let full: HashMap<(u8, u64), Tile> = tiles_for_size(size as u64)
        .into_iter()
        .map(|tile| ((tile.level(), tile.index()), tile))
        .collect();
    for (index, stored) in log.hashes().iter().enumerate() {
        let (needed, range) = tile_for_index(index as u64);
        let key = (needed.level(), needed.index());
        let hash = full[&key]
            .subtree_hash(&data[&key], range)
            .expect("a complete subtree within the tile");
        assert_eq!(hash, *stored, "stored hash {index}");
    }
    // A tile with the wrong amount of data is refused.
    let tile = full[&(0, 0)];
    assert!(tile.parse_data(&data[&(0, 0)][..100]).is_err());
    // Sanity: the level-1 tile's first hash is the root of the first 256 leaves.
    assert_eq!(
        data[&(1, 0)][..32],
        tree_hash(256, &log).expect("in range").0
    );
    assert_eq!(
        stored_hash_index(8, 0),
        tile_for_index(stored_hash_index(8, 0))
            .0
            .stored_hash_indexes()[0]
    );
}

#[test]
fn growing_replaces_partial_tiles() {
    let mut rng = SplitMix(11);
    for _ in 0..300 {
        let old = rng.below(200_000);
        let new = old + rng.below(3_000);
        // Applying the changed tiles to the old tree's tiles gives the new tree's tiles.
        let mut tiles: BTreeMap<(u8, u64), u16> = tiles_for_size(old)
            .iter()
            .map(|tile| ((tile.level(), tile.index()), tile.width()))
            .collect();
        let changed = tiles_between(old, new);
        for tile in &changed {
            let previous = tiles.insert((tile.level(), tile.index()), tile.width());
            assert!(
                previous.is_none_or(|width| width < tile.width() && width < TILE_WIDTH),
                "{old} -> {new}: {} rewrote a full or wider tile",
                tile.path()
            );
        }
        let expected: BTreeMap<(u8, u64), u16> = tiles_for_size(new)
            .iter()
            .map(|tile| ((tile.level(), tile.index()), tile.width()))
            .collect();
        assert_eq!(tiles, expected, "{old} -> {new}");
    }
    assert_eq!(
        widths(&tiles_between(255, 257)),
        vec![(0, 0, 256), (0, 1, 1), (1, 0, 1)]
    );
    assert!(tiles_between(300, 300).is_empty());
}

// ---------------------------------------------------------------------------------------
// Checkpoints

fn test_signer() -> Signer {
    // A fixed seed stands in for the caller's randomness so the signature below is stable.
    Signer::from_seed("dynscale.example/audit", [0x5a; 32]).expect("valid key name")
}

fn rfc_root_8() -> Hash {
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
        .parse()
        .expect("valid hex")
}

#[test]
fn checkpoint_round_trips() {
    let signer = test_signer();
    let verifier = signer.verifier();
    for extensions in [vec![], vec!["timestamp 1700000000".to_string()]] {
        let checkpoint =
            Checkpoint::new("dynscale.example/audit", 8, rfc_root_8(), extensions).expect("valid");
        let note = sign_checkpoint(&checkpoint, &signer);
        assert_eq!(open_checkpoint(&note, &verifier), Ok(checkpoint));
    }
    let empty = Checkpoint::new("dynscale.example/audit", 0, empty_root(), vec![]).expect("valid");
    assert_eq!(
        open_checkpoint(sign_checkpoint(&empty, &signer), &verifier),
        Ok(empty)
    );
}

#[test]
fn checkpoint_known_answer() {
    // Computed once and pinned; an independent signer (Python's `cryptography`, i.e.
    // OpenSSL, following the signed-note spec by hand) produced the same vkey and note.
    // Ed25519 signatures are deterministic, so any change to the body format, key id or
    // signature line shows here.
    let checkpoint =
        Checkpoint::new("dynscale.example/audit", 8, rfc_root_8(), vec![]).expect("valid");
    let note = sign_checkpoint(&checkpoint, &test_signer());
    assert_eq!(note, PINNED_CHECKPOINT);
    assert_eq!(test_signer().verifier().to_string(), PINNED_VKEY);
    let verifier: Verifier = PINNED_VKEY.parse().expect("pinned vkey parses");
    assert_eq!(
        open_checkpoint(PINNED_CHECKPOINT, &verifier),
        Ok(checkpoint)
    );
}

const PINNED_VKEY: &str =
    "dynscale.example/audit+6772f5c2+AQ11UHVOCACl0jfu9YJgNXZrmz5aFYaKlAqyiZWHiOOw";
const PINNED_CHECKPOINT: &str = "dynscale.example/audit\n\
                                 8\n\
                                 XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\
                                 \n\
                                 \u{2014} dynscale.example/audit Z3L1wv+PT8mOoEHcvMZg9TVberoBGh2/R6sGDfY/Fv4aNbfeE7b2TujqhMJRfE82INy1wJzauhqVOco9OduSLNdfTAo=\n";

#[test]
fn any_flipped_byte_fails_to_open() {
    let signer = test_signer();
    let verifier = signer.verifier();
    let checkpoint = Checkpoint::new(
        "dynscale.example/audit",
        8,
        rfc_root_8(),
        vec!["ext".to_string()],
    )
    .expect("valid");
    let note = sign_checkpoint(&checkpoint, &signer).into_bytes();
    // One flip per byte, cycling through low, middle and high bits (Ed25519 verification
    // is slow in debug builds, so not every bit of every byte).
    for position in 0..note.len() {
        let mask = [0x01u8, 0x20, 0x80][position % 3];
        let mut altered = note.clone();
        altered[position] ^= mask;
        assert!(
            open_checkpoint(&altered, &verifier).is_err(),
            "byte {position} ^ {mask:#04x} was accepted"
        );
    }
}

#[test]
fn wrong_key_fails() {
    let signer = test_signer();
    let checkpoint =
        Checkpoint::new("dynscale.example/audit", 8, rfc_root_8(), vec![]).expect("valid");
    let note = sign_checkpoint(&checkpoint, &signer);
    // Same name, other key: a different key id, so no trusted signature is found.
    let impostor = Signer::from_seed("dynscale.example/audit", [0x5b; 32]).expect("valid");
    assert!(matches!(
        open_checkpoint(&note, &impostor.verifier()),
        Err(CheckpointError::Note(NoteError::NoTrustedSignature { .. }))
    ));
    // The impostor's signature under our name and key id does not verify.
    let forged = sign_checkpoint(&checkpoint, &impostor);
    let their_line = forged.rsplit_once("\n\n").expect("signed").1;
    let (_, their_blob) = their_line.rsplit_once(' ').expect("signature line");
    let (our_text, our_line) = note.rsplit_once("\n\n").expect("signed");
    let (our_prefix, our_blob) = our_line.rsplit_once(' ').expect("signature line");
    // Keep our key id (first 4 bytes) with their signature bytes.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut blob = b64.decode(our_blob.trim_end()).expect("base64");
    let theirs = b64.decode(their_blob.trim_end()).expect("base64");
    blob[4..].copy_from_slice(&theirs[4..]);
    let spliced = format!("{our_text}\n\n{our_prefix} {}\n", b64.encode(blob));
    assert!(matches!(
        open_checkpoint(&spliced, &signer.verifier()),
        Err(CheckpointError::Note(NoteError::BadSignature {
            line: 5,
            ..
        }))
    ));
}

#[test]
fn vkey_round_trips() {
    for (name, seed) in [("dynscale.example/audit", [1u8; 32]), ("node-7", [200; 32])] {
        let verifier = Signer::from_seed(name, seed).expect("valid").verifier();
        let text = verifier.to_string();
        let (first, rest) = text.split_once('+').expect("three parts");
        assert_eq!(first, name);
        assert_eq!(&rest[..8], format!("{:08x}", verifier.key_id()));
        let parsed: Verifier = text.parse().expect("own output parses");
        assert_eq!(parsed, verifier);
        assert_eq!(parsed.to_string(), text);
    }
}
