//! Pages of the admin API's long lists: a sidecar may know 1,000 clusters,
//! a cluster 10,000 endpoints, a gateway 100,000 routes. Without
//! parameters every list is whole, as before; `offset` and `limit` take a
//! slice, and the answer says how many there are in all.

use std::ops::Range;

/// The part of a list of `len` items that `offset` and `limit` select.
pub(crate) fn range(len: usize, offset: Option<usize>, limit: Option<usize>) -> Range<usize> {
    let start = offset.unwrap_or(0).min(len);
    let end = limit.map_or(len, |l| start.saturating_add(l).min(len));
    start..end
}

#[cfg(test)]
mod tests {
    use super::range;

    #[test]
    fn a_page_is_clamped_to_the_list() {
        assert_eq!(range(10, None, None), 0..10);
        assert_eq!(range(10, Some(3), None), 3..10);
        assert_eq!(range(10, Some(3), Some(4)), 3..7);
        assert_eq!(range(10, Some(8), Some(4)), 8..10);
        assert_eq!(range(10, Some(20), Some(4)), 10..10);
        assert_eq!(range(10, None, Some(0)), 0..0);
        assert_eq!(range(10, Some(1), Some(usize::MAX)), 1..10);
    }
}
