//! A least-recently-used cache that allocates as it fills.
//!
//! `lru::LruCache::new(cap)` reserves room for `cap` entries at once: the
//! symbolizer's 256k-entry address cache alone cost 9 MiB before its first
//! lookup. This one starts empty, grows with use and evicts the least
//! recently used entry once `cap` entries are held.

use std::hash::Hash;
use std::num::NonZeroUsize;

pub struct Lru<K, V> {
    inner: lru::LruCache<K, V>,
    cap: NonZeroUsize,
}

impl<K: Hash + Eq, V> Lru<K, V> {
    pub fn new(cap: NonZeroUsize) -> Self {
        Self {
            inner: lru::LruCache::unbounded(),
            cap,
        }
    }

    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.inner.get(key)
    }

    pub fn contains(&self, key: &K) -> bool {
        self.inner.contains(key)
    }

    /// Inserts or replaces; evicts the least recently used entry when full.
    pub fn put(&mut self, key: K, value: V) {
        if self.inner.len() >= self.cap.get() && !self.inner.contains(&key) {
            self.inner.pop_lru();
        }
        self.inner.put(key, value);
    }

    pub fn pop(&mut self, key: &K) -> Option<V> {
        self.inner.pop(key)
    }

    /// Entries from most to least recently used.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.inner.iter()
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn clear(&mut self) {
        self.inner.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used_when_full() {
        let mut cache = Lru::new(NonZeroUsize::new(2).unwrap());
        cache.put(1, "a");
        cache.put(2, "b");
        assert_eq!(cache.get(&1), Some(&"a")); // 2 is now the oldest
        cache.put(3, "c");
        assert!(!cache.contains(&2));
        assert!(cache.contains(&1) && cache.contains(&3));
        cache.put(3, "d"); // a replacement evicts nothing
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&3), Some(&"d"));
    }
}
