//! A growable array in fixed-size chunks: growing never copies what is
//! stored nor holds twice the memory, and at most one chunk is unused. The
//! run's per-node and per-vertex arrays live in these, since projects grow
//! by appends while they run.

use std::ops::{Index, IndexMut};

const SHIFT: u32 = 12;
const CHUNK: usize = 1 << SHIFT;

pub(crate) struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Chunked<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push(&mut self, value: T) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks
            .last_mut()
            .expect("a chunk with room exists")
            .push(value);
        self.len += 1;
    }

    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        (i < self.len).then(|| &self[i])
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    /// Bytes held by the chunks, used or not.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.chunks.len() * CHUNK * std::mem::size_of::<T>()
            + self.chunks.capacity() * std::mem::size_of::<Vec<T>>()
    }
}

impl<T> Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        &self.chunks[i >> SHIFT][i & (CHUNK - 1)]
    }
}

impl<T> IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.chunks[i >> SHIFT][i & (CHUNK - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_across_chunks() {
        let mut c = Chunked::default();
        for i in 0..(3 * CHUNK + 5) {
            c.push(i);
        }
        assert_eq!(c.len(), 3 * CHUNK + 5);
        assert_eq!(c[CHUNK], CHUNK);
        assert_eq!(c[3 * CHUNK + 4], 3 * CHUNK + 4);
        assert_eq!(c.get(3 * CHUNK + 5), None);
        c[7] = 70;
        assert_eq!(c.iter().nth(7), Some(&70));
        assert_eq!(c.iter().count(), c.len());
    }
}
