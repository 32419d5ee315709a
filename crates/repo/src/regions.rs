//! [`RegionSet`]: a set of region positions (indices into a repository's region list).
//!
//! The index, the backup pipeline and `verify` all ask "which regions hold this?". A set is a
//! 64-bit mask underneath; [`MAX_REGIONS`] is the limit, and a repository configured with more
//! regions is refused when it is opened ([`check_region_count`]) rather than letting a shift
//! overflow silently and wrap one region onto another.

use std::fmt;

use crate::error::{RepoError, Result};

/// The most regions one repository can span.
pub const MAX_REGIONS: usize = 64;

/// A set of region positions, each below [`MAX_REGIONS`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionSet(u64);

impl RegionSet {
    pub const EMPTY: RegionSet = RegionSet(0);

    /// The set holding only `region`. Panics past [`MAX_REGIONS`]: positions come from a
    /// region list that [`check_region_count`] has bounded.
    pub fn only(region: usize) -> RegionSet {
        assert!(
            region < MAX_REGIONS,
            "region position {region} out of range"
        );
        RegionSet(1 << region)
    }

    pub fn of(regions: impl IntoIterator<Item = usize>) -> RegionSet {
        regions
            .into_iter()
            .fold(RegionSet::EMPTY, |s, r| s.union(RegionSet::only(r)))
    }

    pub fn insert(&mut self, region: usize) {
        *self = self.union(RegionSet::only(region));
    }

    pub fn contains(self, region: usize) -> bool {
        region < MAX_REGIONS && self.0 & (1 << region) != 0
    }

    pub fn union(self, other: RegionSet) -> RegionSet {
        RegionSet(self.0 | other.0)
    }

    pub fn intersection(self, other: RegionSet) -> RegionSet {
        RegionSet(self.0 & other.0)
    }

    /// The regions of `self` that are not in `other`.
    pub fn minus(self, other: RegionSet) -> RegionSet {
        RegionSet(self.0 & !other.0)
    }

    pub fn contains_all(self, other: RegionSet) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The positions, lowest first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..MAX_REGIONS).filter(move |&r| self.contains(r))
    }
}

impl fmt::Debug for RegionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Refuse a region list longer than a [`RegionSet`] can hold.
pub fn check_region_count(n: usize) -> Result<()> {
    if n > MAX_REGIONS {
        return Err(RepoError::Invalid(format!(
            "{n} regions configured; a repository spans at most {MAX_REGIONS} regions"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let a = RegionSet::of([0, 2]);
        let b = RegionSet::only(2);
        assert!(a.contains_all(b));
        assert!(!b.contains_all(a));
        assert_eq!(a.minus(b), RegionSet::only(0));
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(RegionSet::only(63).iter().collect::<Vec<_>>(), vec![63]);
        assert!(!a.contains(64));
    }

    #[test]
    fn more_than_64_regions_are_refused() {
        assert!(check_region_count(64).is_ok());
        let e = check_region_count(65).unwrap_err().to_string();
        assert!(e.contains("at most 64"), "{e}");
    }
}
