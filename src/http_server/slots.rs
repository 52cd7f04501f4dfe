//! Connection slots: who may hold one of the server's connection threads.
//!
//! Three bounds, all checked on the accept thread without ever waiting on a peer:
//! - at most `max_connections` connections in all;
//! - at most `max_connections_per_peer` from one peer address (an IPv4 address, or an IPv6 /64,
//!   which is what one subscriber usually gets), so one host cannot take every slot;
//! - the last `reserved` slots are a reserve: a connection that finds the general pool full is
//!   still accepted, into the reserve, but may only carry requests of the reserved route class
//!   (for the relay: the control plane, so tunnel clients can always poll).
//!
//! A taken slot is released exactly once, by dropping the [`Taken`] the caller keeps for it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Which pool a connection's slot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pool {
    General,
    /// Only requests of the reserved route class are served on this connection.
    Reserve,
}

/// Why a connection was not given a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Every slot, the reserve included, is taken.
    Full,
    /// This peer already holds its share.
    PeerCap,
}

#[derive(Default)]
struct Counts {
    general: usize,
    reserve: usize,
    /// Open connections per peer key; entries are removed when they reach zero, so the map holds
    /// at most one entry per open connection.
    per_peer: HashMap<IpAddr, usize>,
}

pub(super) struct Slots {
    /// General pool size: `max_connections - reserved`.
    general: usize,
    reserved: usize,
    per_peer: usize,
    counts: Mutex<Counts>,
}

/// A slot held by one connection: which pool, and under which peer key it was counted.
#[derive(Debug, Clone, Copy)]
pub(super) struct Taken {
    pub pool: Pool,
    key: IpAddr,
}

impl Slots {
    /// `reserved` is capped so that the general pool keeps at least one slot.
    pub fn new(max_connections: usize, reserved: usize, per_peer: usize) -> Slots {
        let max = max_connections.max(1);
        let reserved = reserved.min(max - 1);
        Slots {
            general: max - reserved,
            reserved,
            per_peer: per_peer.max(1),
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Takes a slot for a connection from `peer`, general pool first.
    pub fn take(&self, peer: IpAddr) -> Result<Taken, Refusal> {
        let key = peer_key(peer);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let held = counts.per_peer.get(&key).copied().unwrap_or(0);
        if held >= self.per_peer {
            return Err(Refusal::PeerCap);
        }
        let pool = if counts.general < self.general {
            counts.general += 1;
            Pool::General
        } else if counts.reserve < self.reserved {
            counts.reserve += 1;
            Pool::Reserve
        } else {
            return Err(Refusal::Full);
        };
        counts.per_peer.insert(key, held + 1);
        Ok(Taken { pool, key })
    }

    /// Gives back a slot from [`Slots::take`].
    pub fn release(&self, taken: Taken) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match taken.pool {
            Pool::General => counts.general = counts.general.saturating_sub(1),
            Pool::Reserve => counts.reserve = counts.reserve.saturating_sub(1),
        }
        if let Some(held) = counts.per_peer.get_mut(&taken.key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                counts.per_peer.remove(&taken.key);
            }
        }
    }
}

/// The address a peer is counted under: IPv4 as is (also when it arrives IPv4-mapped on a
/// dual-stack listener), IPv6 by its /64 prefix.
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

    #[test]
    fn per_peer_cap_general_pool_then_reserve() {
        let slots = Slots::new(4, 1, 2);
        let a1 = slots.take(A).unwrap();
        let a2 = slots.take(A).unwrap();
        assert_eq!(slots.take(A).unwrap_err(), Refusal::PeerCap);
        let b1 = slots.take(B).unwrap();
        assert_eq!(
            (a1.pool, a2.pool, b1.pool),
            (Pool::General, Pool::General, Pool::General)
        );
        // General pool (3) full: the next goes to the reserve, then nothing is left.
        assert_eq!(slots.take(B).unwrap().pool, Pool::Reserve);
        let c = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(slots.take(c).unwrap_err(), Refusal::Full);
        slots.release(a1);
        assert_eq!(slots.take(A).unwrap().pool, Pool::General);
        assert_eq!(slots.take(A).unwrap_err(), Refusal::PeerCap);
    }

    #[test]
    fn ipv6_peers_count_per_64_and_mapped_ipv4_as_ipv4() {
        let slots = Slots::new(10, 0, 1);
        let one: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let two: Ipv6Addr = "2001:db8::2".parse().unwrap();
        slots.take(IpAddr::V6(one)).unwrap();
        assert_eq!(slots.take(IpAddr::V6(two)).unwrap_err(), Refusal::PeerCap);
        slots.take(A).unwrap();
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 2).to_ipv6_mapped());
        assert_eq!(slots.take(mapped).unwrap_err(), Refusal::PeerCap);
    }

    #[test]
    fn reserve_never_takes_the_whole_pool() {
        let slots = Slots::new(1, 5, 10);
        assert_eq!(slots.take(A).unwrap().pool, Pool::General);
        assert_eq!(slots.take(A).unwrap_err(), Refusal::Full);
    }
}
