//! The allocator of the exec'd plugin binaries (installed by [`crate::plugin_main`]).
//!
//! A plugin process lives for one CNI call and allocates a few hundred KiB in small blocks,
//! most of them until it exits. A bump allocator serves those (a pointer moved under an
//! uncontended spin lock) and never calls into the C library's allocator: musl's (which the release plugins link) returns
//! freed groups to the kernel at once, an munmap/mmap pair every few frees. What a bump
//! allocator cannot reuse is bounded by what the call allocated, which its input bounds
//! (stdin is capped at [`crate::skel::MAX_STDIN`]).
//!
//! - Blocks larger than [`BIG`] (or more aligned than a page) go to the system allocator and
//!   are really freed: a big buffer (stdin, a dump) does not stay around. Which side serves a
//!   block depends only on its layout, so `dealloc` and `realloc` know where it came from.
//! - Freeing the most recent block gives its space back (vectors that grow, strings built and
//!   dropped in turn), and the most recent block grows in place.
//! - Chunks come from `mmap` on demand; the first is a static array (no system call at all
//!   for a typical call).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// Blocks above this size go to the system allocator.
pub const BIG: usize = 64 << 10;
/// Size of each further chunk (the first is [`FIRST`]).
const CHUNK: usize = 1 << 20;
const FIRST: usize = 512 << 10;
const PAGE: usize = 4096;

/// The first chunk, in the binary's zero-initialised data: pages cost nothing until touched.
#[repr(C, align(4096))]
struct First(UnsafeCell<[u8; FIRST]>);
// SAFETY: only the global arena hands out its bytes, in disjoint blocks, under its lock.
unsafe impl Sync for First {}
static FIRST_CHUNK: First = First(UnsafeCell::new([0; FIRST]));

/// The current chunk: `next` is its first free byte, `end` its end (both 0: not started).
struct Chunk {
    next: usize,
    end: usize,
}

/// The bump allocator; see the module documentation.
pub struct Arena {
    /// A spin lock: a plugin allocates from one thread (at most a few), so it is never held
    /// for more than a bump, or an mmap when a chunk runs out.
    lock: AtomicBool,
    chunk: UnsafeCell<Chunk>,
    /// Whether the first chunk is [`FIRST_CHUNK`] (only the one global arena may use it).
    uses_static: bool,
}

// SAFETY: `chunk` is only touched with `lock` held.
unsafe impl Sync for Arena {}

impl Arena {
    /// The plugins' global allocator. There must be only one such arena in a process: it owns
    /// the static first chunk.
    pub const fn global() -> Arena {
        Arena {
            lock: AtomicBool::new(false),
            chunk: UnsafeCell::new(Chunk { next: 0, end: 0 }),
            uses_static: true,
        }
    }

    fn system(layout: Layout) -> bool {
        layout.size() > BIG || layout.align() > PAGE
    }

    fn with<R>(&self, f: impl FnOnce(&mut Chunk) -> R) -> R {
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        // SAFETY: the lock is held, so this is the only reference to the chunk state.
        let r = f(unsafe { &mut *self.chunk.get() });
        self.lock.store(false, Ordering::Release);
        r
    }

    /// Starts a new chunk big enough for `layout`; false when the kernel gives no memory.
    fn refill(&self, c: &mut Chunk, layout: Layout) -> bool {
        if c.end == 0 && self.uses_static {
            c.next = FIRST_CHUNK.0.get() as usize;
            c.end = c.next + FIRST;
            return true;
        }
        let len = CHUNK.max(layout.size() + layout.align());
        // SAFETY: a fresh anonymous private mapping; nothing else refers to the new range.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return false;
        }
        c.next = p as usize;
        c.end = p as usize + len;
        true
    }

    /// A block of `layout` from the current chunk (a new one when it is full).
    fn bump(&self, c: &mut Chunk, layout: Layout) -> *mut u8 {
        loop {
            let start = (c.next + layout.align() - 1) & !(layout.align() - 1);
            if c.end != 0 && start + layout.size() <= c.end {
                c.next = start + layout.size();
                return start as *mut u8;
            }
            if !self.refill(c, layout) {
                return std::ptr::null_mut();
            }
        }
    }
}

// SAFETY: blocks are carved from chunks under the lock, so no two live blocks overlap; each is
// aligned as asked and lies inside a chunk that is never unmapped. Blocks of a system layout
// go to `System` both ways.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Arena::system(layout) {
            // SAFETY: forwarded with the caller's layout.
            return unsafe { System.alloc(layout) };
        }
        self.with(|c| self.bump(c, layout))
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if Arena::system(layout) {
            // SAFETY: a system layout, so `ptr` came from `System.alloc` with it.
            return unsafe { System.dealloc(ptr, layout) };
        }
        // Only the most recent block gives its space back.
        self.with(|c| {
            if ptr as usize + layout.size() == c.next {
                c.next = ptr as usize;
            }
        })
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees a valid layout for the new size.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (Arena::system(layout), Arena::system(new)) {
            // SAFETY: both sides are the system's: forwarded as is.
            (true, true) => return unsafe { System.realloc(ptr, layout, new_size) },
            (false, false) => {
                // The most recent block grows or shrinks in place; any block shrinks in place.
                let in_place = self.with(|c| {
                    if ptr as usize + layout.size() == c.next && ptr as usize + new_size <= c.end {
                        c.next = ptr as usize + new_size;
                        true
                    } else {
                        new_size <= layout.size()
                    }
                });
                if in_place {
                    return ptr;
                }
            }
            _ => {}
        }
        // SAFETY: `new` is a valid layout; the old block is copied (the smaller size) and
        // then freed with its own layout.
        unsafe {
            let p = self.alloc(new);
            if !p.is_null() {
                std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            p
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An arena of its own (mapped chunks only; the static one belongs to the global arena).
    fn arena() -> Arena {
        Arena {
            uses_static: false,
            ..Arena::global()
        }
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_the_last_one_is_reused() {
        let a = arena();
        // SAFETY: every pointer is used within its block and freed with its own layout.
        unsafe {
            let p = a.alloc(layout(3, 1));
            let q = a.alloc(layout(16, 16));
            assert_eq!(q as usize % 16, 0);
            assert!(q as usize >= p as usize + 3);
            q.write_bytes(0xaa, 16);
            assert_eq!(*q.add(15), 0xaa);
            a.dealloc(q, layout(16, 16));
            let r = a.alloc(layout(16, 16));
            assert_eq!(r, q, "the freed last block is handed out again");
            // The last block grows in place; an earlier one moves, keeping its bytes.
            assert_eq!(a.realloc(r, layout(16, 16), 64), r);
            p.write_bytes(7, 3);
            let p2 = a.realloc(p, layout(3, 1), 100);
            assert_ne!(p2, p);
            assert_eq!(std::slice::from_raw_parts(p2, 3), &[7, 7, 7]);
        }
    }

    #[test]
    fn big_blocks_go_to_the_system_and_chunks_refill() {
        let a = arena();
        // SAFETY: as above.
        unsafe {
            let small = a.alloc(layout(BIG, 8));
            small.write_bytes(1, BIG);
            // Crossing BIG in a realloc moves the block to the system allocator, bytes kept.
            let big = a.realloc(small, layout(BIG, 8), BIG + 1);
            assert_eq!(*big.add(BIG - 1), 1);
            a.dealloc(big, layout(BIG + 1, 8));
            // Far more than the first chunk: further chunks are mapped.
            let mut last = std::ptr::null_mut();
            for _ in 0..(4 * FIRST / 1000) {
                last = a.alloc(layout(1000, 8));
                assert!(!last.is_null());
                last.write_bytes(3, 1000);
            }
            assert_eq!(*last.add(999), 3);
        }
    }
}
