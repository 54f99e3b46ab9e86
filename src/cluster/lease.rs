//! How much a node leases, when, and what it may use alone: the pure
//! arithmetic of the cluster's limits, apart from Redis and threads so that
//! it can be read and tested on its own (docs/cost.md, Cluster).

/// Size of one lease of a limit: `fraction` of it, at least `floor` (for a
/// budget twice the largest reservation seen, so one lease always covers a
/// request) and 1, at most the whole limit.
pub fn lease_size(limit: u64, fraction: f64, floor: u64) -> u64 {
    let share = (limit as f64 * fraction).ceil() as u64;
    share.max(floor).max(1).min(limit.max(1))
}

/// What a node asks for when `unused` of its allowance is left: nothing
/// while at least one lease (or the largest refused amount, `wanted`) is
/// unused, else enough to have that plus one more lease unused. So a busy
/// node holds between one and two leases unused (more only while a
/// request larger than a lease waits).
pub fn ask(unused: u64, lease: u64, wanted: u64) -> u64 {
    let low = lease.max(wanted);
    if unused >= low {
        0
    } else {
        low + lease - unused
    }
}

/// A node's allowance while Redis is unreachable: what it holds in leases
/// plus `share` of what the cluster had not leased out when Redis was last
/// reached (`free`; the whole limit when nothing is known, as in a new
/// minute or period).
pub fn fallback(held: u64, free: u64, share: f64) -> u64 {
    held.saturating_add((free as f64 * share).floor() as u64)
}

/// This node's part of `max_concurrent` when `live` nodes share it and
/// the node has `rank` among them: an even split, the remainder to the
/// lowest ranks, at least 1 (a node must be able to serve the team).
pub fn concurrency_split(max: u32, live: u32, rank: u32) -> u32 {
    let live = live.max(1);
    let part = max / live + u32::from(rank < max % live);
    part.max(1)
}

/// A node's part of `max_concurrent` while Redis is unreachable.
pub fn concurrency_fallback(max: u32, share: f64) -> u32 {
    ((f64::from(max) * share).floor() as u32).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_sizes() {
        assert_eq!(lease_size(600, 0.02, 1), 12);
        assert_eq!(lease_size(10, 0.02, 1), 1);
        assert_eq!(lease_size(1_000, 0.02, 300), 300);
        assert_eq!(lease_size(100, 0.5, 400), 100, "never more than the limit");
        assert_eq!(lease_size(0, 0.02, 0), 1);
    }

    #[test]
    fn asks_keep_one_to_two_leases_unused() {
        assert_eq!(ask(12, 12, 0), 0);
        assert_eq!(ask(11, 12, 0), 13);
        assert_eq!(ask(0, 12, 0), 24);
        // A refused request larger than a lease is covered, plus a lease.
        assert_eq!(ask(5, 12, 40), 47);
        assert_eq!(ask(40, 12, 40), 0);
    }

    #[test]
    fn fallback_takes_a_share_of_what_was_left() {
        assert_eq!(fallback(30, 100, 0.5), 80);
        assert_eq!(fallback(0, 600, 0.25), 150);
        assert_eq!(fallback(7, 0, 0.5), 7);
    }

    #[test]
    fn concurrency_is_split_between_live_nodes() {
        let parts: Vec<u32> = (0..3).map(|r| concurrency_split(32, 3, r)).collect();
        assert_eq!(parts, vec![11, 11, 10]);
        assert_eq!(parts.iter().sum::<u32>(), 32);
        assert_eq!(concurrency_split(32, 1, 0), 32);
        assert_eq!(concurrency_split(1, 2, 1), 1, "at least one per node");
        assert_eq!(concurrency_fallback(32, 0.5), 16);
        assert_eq!(concurrency_fallback(1, 0.5), 1);
    }
}
