//! Keeps the resident set of improv to the code it runs: stops the kernel's fault-around from
//! mapping the neighbours of each page of improv's own code and read-only data it touches.
//!
//! On a page fault in a file mapping, Linux maps not one page but up to 64 KiB around it from
//! the page cache (`fault_around_bytes`), clamped to the mapping (the VMA). A run touches a few
//! MB scattered through improv's ~19 MB of code, so fault-around made ~13 MB of it resident:
//! most of the 21 MB peak of a 20-turn run (bench/run.sh, smaps at the peak). `MADV_RANDOM`
//! alone does not stop fault-around (it stops read-ahead only), but a VMA carrying it differs
//! from its neighbours, so advising every other page splits the segments into one-page VMAs,
//! and fault-around, clamped to the VMA, maps only the page touched.
//!
//! Measured with `bench/run.sh --no-default-features --runs 5`, two runs of each binary
//! alternated: peak RSS 20.3–20.8 → 14.4–14.6 MB; per-turn overhead within noise (bash turn
//! 1.80–1.82 → 1.88 ms, read 0.15–0.22 → 0.23 ms); each run starts ~20 ms later and `--version`
//! ~11 ms later: one `madvise` per two pages (~3,400), ~3–5 µs each while the process has one
//! thread (twice that once it has more, hence first thing in `main`). Two-page VMAs halve that
//! and end at 15.3–15.5 MB, over the 15 MB goal. The extra VMAs are copied by a `fork` and
//! listed by a read of `/proc/self/maps`. Written by hand: no crate does this; it is two libc
//! calls.

use std::ffi::c_void;
use std::ops::Range;

/// Pages per VMA after the split (see the module docs for the trade against 2).
const PAGES_PER_VMA: usize = 1;

/// Splits each read-only segment of the running executable (code, read-only data) into VMAs of
/// `PAGES_PER_VMA` pages by advising every other such range. Returns how many `madvise` calls
/// succeeded; 0 where the segments cannot be found. Purely advisory: nothing changes but what the
/// kernel maps on a fault.
pub fn limit_fault_around() -> usize {
    let Some(page) = page_size() else { return 0 };
    let mut advised = 0;
    for segment in read_only_segments() {
        let len = PAGES_PER_VMA * page;
        for at in (segment.start..(segment.end + 1).saturating_sub(len)).step_by(2 * len) {
            // SAFETY: [at, at + len) lies inside a segment the loader mapped and never unmaps
            // (read_only_segments rounds inwards to whole pages); MADV_RANDOM changes no
            // contents, only the VMA's read-ahead flag.
            if unsafe { libc::madvise(at as *mut c_void, len, libc::MADV_RANDOM) } == 0 {
                advised += 1;
            }
        }
    }
    advised
}

fn page_size() -> Option<usize> {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|&p| p > 0)
}

/// The executable's loaded, non-writable segments, rounded inwards to whole pages.
fn read_only_segments() -> Vec<Range<usize>> {
    let mut found: Vec<Range<usize>> = Vec::new();
    // SAFETY: the callback only reads the program headers dl_iterate_phdr hands it, during the
    // call, and writes through `data`, which points at `found`, alive here.
    unsafe {
        libc::dl_iterate_phdr(Some(first_object), (&raw mut found).cast());
    }
    let page = page_size().unwrap_or(4096);
    found
        .into_iter()
        .map(|r| r.start.next_multiple_of(page)..r.end / page * page)
        .filter(|r| r.start < r.end)
        .collect()
}

/// `dl_iterate_phdr` callback: the first object listed is the executable itself; collect its
/// non-writable loaded segments, then return 1 to stop the walk.
unsafe extern "C" fn first_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes a valid info for the duration of this call.
    let info = unsafe { &*info };
    // SAFETY: as above, dlpi_phdr points at dlpi_phnum program headers.
    let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
    // SAFETY: `data` is the `&mut Vec` read_only_segments passed.
    let found = unsafe { &mut *data.cast::<Vec<Range<usize>>>() };
    for h in headers {
        if h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_W == 0 {
            let start = info.dlpi_addr as usize + h.p_vaddr as usize;
            found.push(start..start + h.p_memsz as usize);
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The executable's mappings in /proc/self/maps that are one VMA of `PAGES_PER_VMA` pages.
    fn small_vmas_of_executable() -> usize {
        let exe = std::fs::read_link("/proc/self/exe").expect("read /proc/self/exe");
        let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
        maps.lines()
            .filter(|line| line.ends_with(&*exe.to_string_lossy()))
            .filter_map(|line| {
                let (start, end) = line.split_once(' ')?.0.split_once('-')?;
                let len =
                    usize::from_str_radix(end, 16).ok()? - usize::from_str_radix(start, 16).ok()?;
                (len == PAGES_PER_VMA * 4096).then_some(())
            })
            .count()
    }

    #[test]
    fn the_executables_code_and_read_only_data_become_vmas_of_one_page() {
        let pages: usize = read_only_segments()
            .iter()
            .map(|s| (s.end - s.start) / 4096)
            .sum();
        assert!(pages > 50, "found only {pages} pages of read-only segments");
        let advised = limit_fault_around();
        // Every advised range is a VMA of its own, and so is each range left between two.
        let small = small_vmas_of_executable();
        assert!(
            advised * 2 * PAGES_PER_VMA >= pages - 4 && small >= 2 * advised - 4,
            "{pages} pages, {advised} advised, {small} small VMAs: fault-around maps 64 KiB per fault"
        );
    }
}
