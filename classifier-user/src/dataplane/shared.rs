//! A BPF array map created `BPF_F_MMAPABLE`, mapped into this process and written word by
//! word with ordered stores, for the tables the program reads with a protocol of its own
//! (`EXACT`, `PORTS`: docs/decision.md §4 and §5).

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    sync::atomic::{fence, AtomicU64, Ordering},
};

use aya::maps::MapData;

use super::DataplaneError;

/// The mapping of an array map, as 8-byte words.
pub(crate) struct Shared {
    base: *mut u64,
    words: usize,
    /// Bytes mapped (0: the words are `_owned`, in process memory, for unit tests).
    len: usize,
    _owned: Vec<u64>,
}

// SAFETY: `Shared` owns its mapping; words are accessed only as atomics.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Drop for Shared {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: the mapping made in `map`, unmapped once.
            unsafe { libc::munmap(self.base.cast(), self.len) };
        }
    }
}

impl Shared {
    /// Maps array map `name` of `elem_bytes`-byte elements (a multiple of 8).
    pub fn map(
        data: &MapData,
        name: &'static str,
        elem_bytes: usize,
    ) -> Result<Self, DataplaneError> {
        debug_assert!(elem_bytes.is_multiple_of(8));
        let entries = data
            .info()
            .map_err(DataplaneError::map(name))?
            .max_entries() as usize;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let len = (entries * elem_bytes).next_multiple_of(page);
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: a shared mapping of the map's own size; checked for failure below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(DataplaneError::Shared {
                map: name,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self {
            base: p.cast(),
            words: entries * elem_bytes / 8,
            len,
            _owned: Vec::new(),
        })
    }

    /// `words` zero words in process memory (unit tests).
    #[cfg(test)]
    pub fn in_memory(words: usize) -> Self {
        let mut owned = vec![0u64; words];
        Self {
            base: owned.as_mut_ptr(),
            words,
            len: 0,
            _owned: owned,
        }
    }

    /// Word `i` of the map's memory.
    pub fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.words, "word {i} of {}", self.words);
        // SAFETY: an aligned word inside the mapping (or the owned buffer), which the program
        // also accesses as 8-byte words.
        unsafe { AtomicU64::from_ptr(self.base.add(i)) }
    }

    /// Clears the meta word at `i`, so that a reader in the program stops accepting its slot,
    /// and orders the clear before any later store to the slot.
    pub fn clear_meta(&self, i: usize) {
        self.word(i).store(0, Ordering::Release);
        fence(Ordering::SeqCst);
    }

    /// Words mapped.
    pub fn words(&self) -> usize {
        self.words
    }
}
