//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4): a lookup table
//! of prime size M in which every backend owns about M/N entries, filled so that
//! removing one backend reassigns mostly the entries it owned. Pure: the tc program of
//! the routing mesh reads the table from a map, this module only computes it.
//!
//! Each backend has a permutation of the slots, `offset + j * skip mod M` (skip in
//! 1..M, so with M prime every permutation visits every slot); backends take turns
//! claiming their next free preferred slot until the table is full.
//!
//! `table` builds from nothing, as the paper does; removing one of 100 backends from
//! it then moves ~1.3 % of the table beyond that backend's own slots (the turn-taking
//! cascades). `rebuild` starts from the table the datapath holds instead: slots of
//! backends that stay keep their owner unless the owner is over its new quota (then it
//! gives up its least preferred ones), and the free slots go to backends under quota in
//! the same turn-taking order. Removing a backend then moves its slots only, adding one
//! moves only what the newcomer takes, and every share stays floor or ceil of M/N.

/// The default table size (a prime, as Maglev needs; Cilium's default too).
pub const DEFAULT_SIZE: usize = 16381;

/// FNV-1a 64 over `data` with a `seed` folded in first: two independent hashes of a
/// backend's name give its offset and skip.
fn hash(seed: u64, data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // A final mix: FNV alone spreads short, similar names (10.0.0.1, 10.0.0.2) poorly.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// Whether `n` is prime (trial division: table sizes are small).
pub fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaglevError {
    #[error("maglev table size {0} is not a prime")]
    NotPrime(usize),
    #[error("maglev table size {size} is smaller than the {backends} backends")]
    TooSmall { size: usize, backends: usize },
}

/// The table for `backends` (each named by bytes unique to it, e.g. its address): entry
/// i is the index in `backends` of the backend owning slot i. Empty without backends.
pub fn table<B: AsRef<[u8]>>(backends: &[B], size: usize) -> Result<Vec<u32>, MaglevError> {
    if !is_prime(size) {
        return Err(MaglevError::NotPrime(size));
    }
    if backends.is_empty() {
        return Ok(Vec::new());
    }
    if backends.len() > size {
        return Err(MaglevError::TooSmall {
            size,
            backends: backends.len(),
        });
    }
    let m = size as u64;
    let perm = perm(backends, m);
    let mut next = vec![0u64; backends.len()];
    let mut entry = vec![u32::MAX; size];
    let mut filled = 0;
    'fill: loop {
        for (i, &(offset, skip)) in perm.iter().enumerate() {
            let mut c = (offset + next[i] * skip) % m;
            while entry[c as usize] != u32::MAX {
                next[i] += 1;
                c = (offset + next[i] * skip) % m;
            }
            entry[c as usize] = i as u32;
            next[i] += 1;
            filled += 1;
            if filled == size {
                break 'fill;
            }
        }
    }
    Ok(entry)
}

/// The per-backend permutation parameters (offset, skip).
fn perm<B: AsRef<[u8]>>(backends: &[B], m: u64) -> Vec<(u64, u64)> {
    backends
        .iter()
        .map(|b| (hash(0, b.as_ref()) % m, hash(1, b.as_ref()) % (m - 1) + 1))
        .collect()
}

fn pow_mod(mut b: u64, mut e: u64, m: u64) -> u64 {
    let mut r = 1u64;
    b %= m;
    while e > 0 {
        if e & 1 == 1 {
            r = (r as u128 * b as u128 % m as u128) as u64;
        }
        b = (b as u128 * b as u128 % m as u128) as u64;
        e >>= 1;
    }
    r
}

/// The table for `backends` given the one built for `prev` (`prev_table`, entries
/// indexing `prev`): see the module doc. A `prev_table` of another size, or empty,
/// builds from nothing.
pub fn rebuild<B: AsRef<[u8]>>(
    prev: &[B],
    prev_table: &[u32],
    backends: &[B],
    size: usize,
) -> Result<Vec<u32>, MaglevError> {
    if prev_table.len() != size || backends.is_empty() {
        return table(backends, size);
    }
    if !is_prime(size) {
        return Err(MaglevError::NotPrime(size));
    }
    let n = backends.len();
    if n > size {
        return Err(MaglevError::TooSmall { size, backends: n });
    }
    let m = size as u64;
    const FREE: u32 = u32::MAX;
    // Old index -> new index, by name.
    let map: Vec<u32> = prev
        .iter()
        .map(|p| {
            backends
                .iter()
                .position(|b| b.as_ref() == p.as_ref())
                .map_or(FREE, |i| i as u32)
        })
        .collect();
    let mut entry: Vec<u32> = prev_table
        .iter()
        .map(|&e| map.get(e as usize).copied().unwrap_or(FREE))
        .collect();
    let mut count = vec![0usize; n];
    for &e in &entry {
        if e != FREE {
            count[e as usize] += 1;
        }
    }
    // Quotas: floor(M/N) each, the M mod N extra slots to those holding most now.
    let (base, extra) = (size / n, size % n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| count[*b].cmp(&count[*a]).then(a.cmp(b)));
    let mut quota = vec![base; n];
    for &i in order.iter().take(extra) {
        quota[i] += 1;
    }
    let p = perm(backends, m);
    // Over quota: give up the slots last in the owner's own preference.
    for i in 0..n {
        if count[i] <= quota[i] {
            continue;
        }
        let (offset, skip) = p[i];
        let inv = pow_mod(skip, m - 2, m);
        let mut mine: Vec<(u64, usize)> = entry
            .iter()
            .enumerate()
            .filter(|(_, &e)| e as usize == i)
            .map(|(c, _)| (((c as u64 + m - offset) % m) * inv % m, c))
            .collect();
        mine.sort_unstable();
        for &(_, c) in mine.iter().skip(quota[i]) {
            entry[c] = FREE;
        }
        count[i] = quota[i];
    }
    // Under quota: take turns claiming the next free slot in one's own order.
    let mut next = vec![0u64; n];
    let mut want: usize = (0..n).map(|i| quota[i] - count[i]).sum();
    while want > 0 {
        for i in 0..n {
            if count[i] == quota[i] {
                continue;
            }
            let (offset, skip) = p[i];
            let mut c = (offset + next[i] * skip) % m;
            while entry[c as usize] != FREE {
                next[i] += 1;
                c = (offset + next[i] * skip) % m;
            }
            entry[c as usize] = i as u32;
            next[i] += 1;
            count[i] += 1;
            want -= 1;
        }
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.{}.{}.{}:8080", i / 65536, (i / 256) % 256, i % 256))
            .collect()
    }

    fn shares(t: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &e in t {
            c[e as usize] += 1;
        }
        c
    }

    #[test]
    fn sizes_and_edges() {
        assert!(is_prime(DEFAULT_SIZE));
        assert_eq!(table(&names(3), 16380), Err(MaglevError::NotPrime(16380)));
        assert_eq!(table::<String>(&[], 7), Ok(vec![]));
        assert!(matches!(table(&names(8), 7), Err(MaglevError::TooSmall { .. })));
        let t = table(&names(1), 7).unwrap();
        assert_eq!(t, vec![0; 7]);
        // Deterministic: the same backends give the same table.
        assert_eq!(table(&names(10), 251), table(&names(10), 251));
    }

    #[test]
    fn hundred_backends_even_and_stable() {
        let all = names(100);
        let t = table(&all, DEFAULT_SIZE).unwrap();
        let even = DEFAULT_SIZE as f64 / 100.0;
        for (i, c) in shares(&t, 100).iter().enumerate() {
            let dev = (*c as f64 - even).abs() / even;
            assert!(
                dev <= 0.05,
                "backend {i} has {c} slots, {:.1}% off even",
                dev * 100.0
            );
        }
        // Remove backend 37: only slots that were not 37's and now change count.
        let mut rest = all.clone();
        rest.remove(37);
        // From nothing, the paper's cascade moves more than 1 %...
        let fresh = table(&rest, DEFAULT_SIZE).unwrap();
        println!(
            "fresh build: {} slots moved",
            moved_beyond_own(&all, &t, &rest, &fresh)
        );
        // ...from the held table only 37's own slots move.
        let t2 = rebuild(&all, &t, &rest, DEFAULT_SIZE).unwrap();
        let moved = moved_beyond_own(&all, &t, &rest, &t2);
        assert!(
            moved <= DEFAULT_SIZE / 100,
            "{moved} slots moved beyond backend 37's own"
        );
        // Adding it back moves only what it takes: its share, give or take one.
        let t3 = rebuild(&rest, &t2, &all, DEFAULT_SIZE).unwrap();
        let changed = t2
            .iter()
            .zip(&t3)
            .filter(|(a, b)| rest[**a as usize] != all[**b as usize])
            .count();
        assert!(
            changed <= DEFAULT_SIZE / 100 + 1,
            "{changed} slots changed owner on an add"
        );
        assert!(shares(&t3, 100).iter().all(|c| (163..=164).contains(c)));
    }

    /// Slots whose owner changed although their old owner is still there.
    fn moved_beyond_own(a: &[String], ta: &[u32], b: &[String], tb: &[u32]) -> usize {
        ta.iter()
            .zip(tb)
            .filter(|(x, y)| {
                let old = &a[**x as usize];
                b.contains(old) && old != &b[**y as usize]
            })
            .count()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Any 100 backends, any one removed: <= 1 % of the table moves beyond the removed
        /// backend's own slots, and every backend's share is within 5 % of even.
        #[test]
        fn remove_one_of_100(seed in any::<u32>(), gone in 0usize..100) {
            let all: Vec<String> = (0..100).map(|i| format!("be-{seed}-{i}")).collect();
            let t = table(&all, DEFAULT_SIZE).unwrap();
            let even = DEFAULT_SIZE as f64 / 100.0;
            for c in shares(&t, 100) {
                prop_assert!((c as f64 - even).abs() / even <= 0.05, "share {} vs {}", c, even);
            }
            let mut rest = all.clone();
            rest.remove(gone);
            let t2 = rebuild(&all, &t, &rest, DEFAULT_SIZE).unwrap();
            let moved = moved_beyond_own(&all, &t, &rest, &t2);
            prop_assert!(moved <= DEFAULT_SIZE / 100, "{} moved", moved);
            let even2 = DEFAULT_SIZE as f64 / 99.0;
            for c in shares(&t2, 99) {
                prop_assert!((c as f64 - even2).abs() / even2 <= 0.05, "share {} vs {}", c, even2);
            }
        }
    }
}
