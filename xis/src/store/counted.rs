//! An ordered set that counts a range without walking it.
//!
//! A lookup answers with the number of matches before its first page, so the embedded index
//! must count `price <= x` over 100,000 distinct prices as cheaply as it counts `EnvType=Wasm`.
//! A `BTreeMap` can only count by iterating the range. This set keeps its elements in sorted
//! blocks of at most [`BLOCK_MAX`] elements: counting the elements before a point is a walk over
//! block lengths (one integer per block, contiguous in memory) plus one binary search inside a
//! block, so a count over 100,000 entries reads a few hundred integers. Inserting or
//! removing moves at most one block's worth of elements and splits or merges blocks to keep them
//! between a quarter and all of `BLOCK_MAX` full (but for a lone last block).

/// Most elements in one block. Large enough that the block walk is short, small enough that an
/// insertion's shift within a block is a few hundred bytes.
pub const BLOCK_MAX: usize = 256;

/// Fewest elements a block keeps before merging into a neighbour.
const BLOCK_MIN: usize = BLOCK_MAX / 4;

/// A sorted set of distinct elements with counting by predicate.
#[derive(Debug, Clone)]
pub struct CountedSet<T: Ord> {
    /// Sorted, non-empty blocks; every element of a block is below every element of the next.
    blocks: Vec<Vec<T>>,
    /// `lens[i] == blocks[i].len()`: walked when counting, so kept apart and dense.
    lens: Vec<u32>,
    len: usize,
}

impl<T: Ord> Default for CountedSet<T> {
    fn default() -> Self {
        CountedSet {
            blocks: Vec::new(),
            lens: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Ord> CountedSet<T> {
    /// Elements in the set.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The block that holds, or would hold, `value`: the first whose last element is not below it.
    fn block_for(&self, value: &T) -> usize {
        let index = self
            .blocks
            .partition_point(|block| block.last().is_some_and(|last| last < value));
        index.min(self.blocks.len().saturating_sub(1))
    }

    /// Adds `value`; false if it was already there.
    pub fn insert(&mut self, value: T) -> bool {
        if self.blocks.is_empty() {
            self.blocks.push(vec![value]);
            self.lens.push(1);
            self.len = 1;
            return true;
        }
        let block_index = self.block_for(&value);
        let block = &mut self.blocks[block_index];
        let at = match block.binary_search(&value) {
            Ok(_) => return false,
            Err(at) => at,
        };
        block.insert(at, value);
        self.len += 1;
        self.settle(block_index);
        self.check();
        true
    }

    /// Records block `index`'s new length, splitting it in two if it is over [`BLOCK_MAX`].
    fn settle(&mut self, index: usize) {
        let block = &mut self.blocks[index];
        if block.len() > BLOCK_MAX {
            let upper = block.split_off(block.len() / 2);
            self.lens.insert(index + 1, upper.len() as u32);
            self.blocks.insert(index + 1, upper);
        }
        self.lens[index] = self.blocks[index].len() as u32;
    }

    /// Removes `value`; false if it was not there.
    #[cfg(test)]
    pub fn remove(&mut self, value: &T) -> bool {
        self.remove_by(|element| element.cmp(value))
    }

    /// Removes the element that `order` (how an element compares to the one sought, consistent
    /// with the set's order) finds equal, without building the element to compare with.
    pub fn remove_by(&mut self, order: impl Fn(&T) -> std::cmp::Ordering) -> bool {
        if self.blocks.is_empty() {
            return false;
        }
        let block_index = self
            .blocks
            .partition_point(|block| {
                block
                    .last()
                    .is_some_and(|last| order(last) == std::cmp::Ordering::Less)
            })
            .min(self.blocks.len() - 1);
        let block = &mut self.blocks[block_index];
        let Ok(at) = block.binary_search_by(&order) else {
            return false;
        };
        block.remove(at);
        let remaining = block.len();
        self.len -= 1;
        self.lens[block_index] = remaining as u32;
        if remaining < BLOCK_MIN && self.blocks.len() > 1 {
            // Merge with a neighbour, splitting again if that overfills it.
            let left = if block_index + 1 < self.blocks.len() {
                block_index
            } else {
                block_index - 1
            };
            let right = self.blocks.remove(left + 1);
            self.lens.remove(left + 1);
            self.blocks[left].extend(right);
            self.settle(left);
        } else if remaining == 0 {
            self.blocks.remove(block_index);
            self.lens.remove(block_index);
        }
        self.check();
        true
    }

    /// How many elements satisfy `below`, which must hold for a prefix of the set and not
    /// after it (as for [`slice::partition_point`]): the rank of the first element outside it.
    pub fn rank(&self, below: impl Fn(&T) -> bool) -> usize {
        let block_index = self
            .blocks
            .partition_point(|block| block.last().is_some_and(&below));
        let before: usize = self.lens[..block_index].iter().map(|&n| n as usize).sum();
        match self.blocks.get(block_index) {
            Some(block) => before + block.partition_point(&below),
            None => before,
        }
    }

    /// The elements from rank `start` on, in order.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = &T> + '_ {
        let mut skipped = 0;
        let mut first_block = self.blocks.len();
        for (index, &n) in self.lens.iter().enumerate() {
            if skipped + n as usize > start {
                first_block = index;
                break;
            }
            skipped += n as usize;
        }
        let offset = start - skipped.min(start);
        self.blocks[first_block.min(self.blocks.len())..]
            .iter()
            .enumerate()
            .flat_map(move |(i, block)| block[if i == 0 { offset } else { 0 }..].iter())
    }

    /// Every element, in order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.blocks.iter().flatten()
    }

    /// The set's invariants, in debug builds: blocks sorted, non-empty, sized, and counted.
    fn check(&self) {
        if cfg!(debug_assertions) {
            debug_assert_eq!(self.blocks.len(), self.lens.len());
            debug_assert_eq!(
                self.lens.iter().map(|&n| n as usize).sum::<usize>(),
                self.len
            );
            for (block, &n) in self.blocks.iter().zip(&self.lens) {
                debug_assert!(!block.is_empty() && block.len() <= BLOCK_MAX);
                debug_assert_eq!(block.len(), n as usize);
            }
            for pair in self.blocks.windows(2) {
                debug_assert!(pair[0].last() < pair[1].first());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Against a `BTreeSet` under random inserts and removes: same answers to insert,
        /// remove, len, order, every rank and every iteration start.
        #[test]
        fn behaves_like_a_btree_set(
            ops in proptest::collection::vec((any::<bool>(), 0u32..2_000), 0..3_000),
            probes in proptest::collection::vec(0u32..2_100, 1..40),
        ) {
            let mut set = CountedSet::default();
            let mut model = BTreeSet::new();
            for (add, value) in ops {
                if add {
                    prop_assert_eq!(set.insert(value), model.insert(value));
                } else {
                    prop_assert_eq!(set.remove(&value), model.remove(&value));
                }
            }
            prop_assert_eq!(set.len(), model.len());
            prop_assert!(set.iter().eq(model.iter()));
            for probe in probes {
                let rank = set.rank(|v| *v < probe);
                prop_assert_eq!(rank, model.range(..probe).count());
                prop_assert!(set.iter_from(rank).take(5).eq(model.range(probe..).take(5)));
            }
        }
    }

    #[test]
    fn counts_a_range_of_many_distinct_values() {
        let mut set = CountedSet::default();
        for value in 0..100_000u32 {
            assert!(set.insert(value * 3));
        }
        let count = set.rank(|v| *v <= 150_000) - set.rank(|v| *v < 30_000);
        assert_eq!(count, (30_000..=150_000).step_by(3).count());
        assert_eq!(set.iter_from(set.rank(|v| *v < 299_997)).count(), 1);
        assert_eq!(set.iter_from(set.len()).count(), 0);
        for value in 0..100_000u32 {
            assert!(set.remove(&(value * 3)));
        }
        assert!(set.is_empty());
        assert_eq!(set.rank(|_| true), 0);
    }
}
