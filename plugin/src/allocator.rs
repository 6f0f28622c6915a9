//! The component's memory allocator: free lists by size class in front of a
//! general allocator.
//!
//! A page's work allocates and frees the same small sizes over and over: a
//! property's name and value, a mapped contact's strings, the lists the
//! canonical ABI lowers them into, all freed when the host has read them.
//! Under Cranelift a general allocator's bins, splits and merges cost more
//! than anything else the component does (a quarter of its instructions on
//! the bench's path, `docs/performance.md`). Here a request of up to
//! [`SMALL`] bytes is served from a free list of blocks of its size class
//! (16-byte steps), a pop and a push; anything larger, or more strictly
//! aligned, goes to the general allocator.
//!
//! Blocks are carved from chunks of [`CHUNK`] bytes and a freed block goes
//! back to its class's list, never to the general allocator: the small
//! blocks a component holds are the most it ever held at once in each
//! class. That is what a component that works page by page needs, and the
//! sandbox's memory limit bounds it like any other memory.
//!
//! Not thread-safe: the component is single-threaded (`wasm32-wasip2`
//! without atomics), which is the only place it is the global allocator.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr;

/// The largest request served by size class.
pub const SMALL: usize = 512;
/// The size-class step, and the alignment every block has.
const GRANULE: usize = 16;
const CLASSES: usize = SMALL / GRANULE;
/// Blocks are carved from chunks this large, taken from the general allocator.
pub const CHUNK: usize = 8 * 1024;

/// Size-class free lists over `A`, which serves everything else.
pub struct SizeClasses<A> {
    general: A,
    /// The head of each class's free list; a free block's first word is the next.
    free: UnsafeCell<[*mut u8; CLASSES]>,
}

// SAFETY: the component is single-threaded: there is no second thread to
// race on the free lists (and no `atomics` target feature to make one).
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
unsafe impl<A: Sync> Sync for SizeClasses<A> {}

impl<A: GlobalAlloc> SizeClasses<A> {
    /// Free lists, all empty, in front of `general`.
    pub const fn new(general: A) -> Self {
        Self {
            general,
            free: UnsafeCell::new([ptr::null_mut(); CLASSES]),
        }
    }

    /// The class serving `layout`, if a class does.
    #[inline]
    fn class(layout: Layout) -> Option<usize> {
        (layout.size() <= SMALL && layout.align() <= GRANULE)
            .then(|| layout.size().saturating_sub(1) / GRANULE)
    }

    /// Carves a chunk into blocks of `class`, returns one and lists the rest.
    #[cold]
    unsafe fn refill(&self, class: usize) -> *mut u8 {
        let size = (class + 1) * GRANULE;
        // SAFETY: CHUNK is non-zero and GRANULE a power of two.
        let chunk = unsafe {
            self.general
                .alloc(Layout::from_size_align_unchecked(CHUNK, GRANULE))
        };
        if chunk.is_null() {
            return chunk;
        }
        let blocks = CHUNK / size;
        // SAFETY: every block lies in the chunk; the lists are only touched
        // from this thread and no reference to them outlives this call.
        unsafe {
            let free = &mut *self.free.get();
            for i in (1..blocks).rev() {
                let block = chunk.add(i * size);
                block.cast::<*mut u8>().write(free[class]);
                free[class] = block;
            }
        }
        chunk
    }
}

// SAFETY: a block handed out is never handed out again before it is freed;
// blocks are GRANULE-aligned and at least as large as the classes they
// serve; everything else is the general allocator's, with its own layout.
unsafe impl<A: GlobalAlloc> GlobalAlloc for SizeClasses<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = Self::class(layout) else {
            return unsafe { self.general.alloc(layout) };
        };
        // SAFETY: single-threaded (above); a listed block's first word is
        // the next listed block.
        unsafe {
            let free = &mut *self.free.get();
            let block = free[class];
            if block.is_null() {
                return self.refill(class);
            }
            free[class] = block.cast::<*mut u8>().read();
            block
        }
    }

    #[inline]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(class) = Self::class(layout) else {
            return unsafe { self.general.dealloc(block, layout) };
        };
        // SAFETY: `block` came from this class (the caller passes the
        // layout it was allocated with) and is at least a pointer wide.
        unsafe {
            let free = &mut *self.free.get();
            block.cast::<*mut u8>().write(free[class]);
            free[class] = block;
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with this alignment is a
        // valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (Self::class(layout), Self::class(new_layout)) {
            (Some(old), Some(new)) if old == new => block,
            (None, None) => unsafe { self.general.realloc(block, layout, new_size) },
            _ => unsafe {
                let moved = self.alloc(new_layout);
                if !moved.is_null() {
                    ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                    self.dealloc(block, layout);
                }
                moved
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;
    use std::collections::HashMap;

    /// Fills `block` with a pattern naming `id`.
    fn stamp(block: *mut u8, size: usize, id: u8) {
        unsafe { ptr::write_bytes(block, id, size) }
    }

    fn stamped(block: *mut u8, size: usize, id: u8) -> bool {
        (0..size).all(|i| unsafe { *block.add(i) } == id)
    }

    #[test]
    fn classes_cover_sizes_up_to_small_in_granule_steps() {
        let class = |size, align| {
            SizeClasses::<System>::class(Layout::from_size_align(size, align).unwrap())
        };
        assert_eq!(class(1, 1), Some(0));
        assert_eq!(class(16, 8), Some(0));
        assert_eq!(class(17, 1), Some(1));
        assert_eq!(class(SMALL, 16), Some(CLASSES - 1));
        assert_eq!(class(SMALL + 1, 1), None);
        assert_eq!(
            class(8, 32),
            None,
            "stricter alignment goes to the general allocator"
        );
    }

    #[test]
    fn a_freed_block_is_reused_for_its_class_and_blocks_are_aligned() {
        let heap = SizeClasses::new(System);
        let layout = Layout::from_size_align(24, 8).unwrap();
        unsafe {
            let a = heap.alloc(layout);
            assert_eq!(a as usize % GRANULE, 0);
            heap.dealloc(a, layout);
            // Any size of the same class gets the freed block back.
            let b = heap.alloc(Layout::from_size_align(32, 1).unwrap());
            assert_eq!(a, b);
            heap.dealloc(b, Layout::from_size_align(32, 1).unwrap());
        }
    }

    #[test]
    fn realloc_keeps_contents_within_a_class_across_classes_and_to_large() {
        let heap = SizeClasses::new(System);
        unsafe {
            let mut layout = Layout::from_size_align(10, 1).unwrap();
            let mut block = heap.alloc(layout);
            stamp(block, 10, 7);
            for new_size in [12, 100, 600, 4000, 300, 5] {
                block = heap.realloc(block, layout, new_size);
                assert!(!block.is_null());
                assert!(
                    stamped(block, layout.size().min(new_size), 7),
                    "to {new_size}"
                );
                layout = Layout::from_size_align(new_size, 1).unwrap();
                stamp(block, new_size, 7);
            }
            heap.dealloc(block, layout);
        }
    }

    /// Random allocations, frees and reallocations of sizes around the
    /// classes' edges: no two live blocks overlap and every block keeps
    /// what was written to it.
    #[test]
    fn live_blocks_never_overlap_and_keep_their_contents() {
        let heap = SizeClasses::new(System);
        let mut rng = fastrand::Rng::with_seed(18);
        let mut live: HashMap<u8, (*mut u8, Layout)> = HashMap::new();
        for step in 0..60_000u32 {
            let id = rng.u8(..);
            let size = match rng.u8(..4) {
                0 => rng.usize(1..=32),
                1 => rng.usize(1..=SMALL),
                2 => rng.usize(SMALL - 16..SMALL + 16),
                _ => rng.usize(1..=3 * CHUNK),
            };
            let align = [1, 2, 4, 8, 16, 32][rng.usize(..6)];
            unsafe {
                match live.remove(&id) {
                    Some((block, layout)) => {
                        assert!(stamped(block, layout.size(), id), "step {step}");
                        if rng.bool() {
                            heap.dealloc(block, layout);
                        } else {
                            let block = heap.realloc(block, layout, size);
                            let kept = layout.size().min(size);
                            assert!(stamped(block, kept, id), "step {step}");
                            let layout = Layout::from_size_align(size, layout.align()).unwrap();
                            stamp(block, size, id);
                            live.insert(id, (block, layout));
                        }
                    }
                    None => {
                        let layout = Layout::from_size_align(size, align).unwrap();
                        let block = heap.alloc(layout);
                        assert_eq!(block as usize % align, 0);
                        stamp(block, size, id);
                        live.insert(id, (block, layout));
                    }
                }
            }
        }
        let mut spans: Vec<(usize, usize)> = live
            .values()
            .map(|(block, layout)| (*block as usize, *block as usize + layout.size()))
            .collect();
        spans.sort();
        assert!(
            spans.windows(2).all(|w| w[0].1 <= w[1].0),
            "overlapping blocks"
        );
        for (id, (block, layout)) in live {
            assert!(stamped(block, layout.size(), id));
            unsafe { heap.dealloc(block, layout) };
        }
    }
}
