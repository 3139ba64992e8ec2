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
//!
//! The shared libraries' read-only segments (libc, libm, the loader) are split too, and once
//! split, the file-backed pages of those segments and of improv's own are unmapped
//! ([`drop_faulted_before`]): what the loader faulted in before `main` (libc's `ifunc`
//! resolvers, improv's 2 MB of relocation tables, read once) stays out of the resident set;
//! what a run uses comes back a page at a time. The drop leaves out what the loader wrote into
//! a read-only segment: every segment of an object with text relocations (`DT_TEXTREL`, or
//! `DF_TEXTREL` in `DT_FLAGS`: the loader makes its text writable, relocates it and protects it
//! again; an `LD_PRELOAD` library built without `-fPIC` is one) and the last file page of a
//! segment whose memory size passes its file size (the loader zeroes that page's tail). A known
//! effect: a breakpoint set before `main` in a read-only segment (a uprobe, gdb's `start`) is
//! written into a private copy of the page, which the drop discards, so it no longer fires. `bench/compare.sh`, the lean build of a82fd56
//! against the same with this and 3d2d3ed, four runs of each alternated (load 7): peak RSS
//! 14.2 → 9.1–9.2 MB; the split of the libraries alone had given 14.8–15.0 → 14.6–14.7 MB.
//!
//! The split is skipped when it would take more than [`MAX_ADVISE`] calls: a debug build's
//! segments need 9,565 (~19,000 VMAs, ~48 ms at each start), a good share of the kernel's
//! `vm.max_map_count` (65,530 by default) that every other mapping of the process counts
//! against; a release build needs ~3,400.

use std::ffi::c_void;
use std::ops::Range;

/// Pages per VMA after the split (see the module docs for the trade against 2).
const PAGES_PER_VMA: usize = 1;

/// The most `madvise` calls [`limit_fault_around`] makes; over it, it splits nothing (see the
/// module docs).
const MAX_ADVISE: usize = 8_000;

/// Splits each read-only segment of the running executable (code, read-only data) into VMAs of
/// `PAGES_PER_VMA` pages by advising every other such range. Returns how many `madvise` calls
/// succeeded; 0 where the segments cannot be found or the split would take more than
/// [`MAX_ADVISE`] calls. Purely advisory: nothing changes but what the kernel maps on a fault.
pub fn limit_fault_around() -> usize {
    let Some(page) = page_size() else { return 0 };
    let segments = read_only_segments(page);
    let advised = split(&segments.split, page, MAX_ADVISE);
    if advised > 0 {
        drop_faulted_before(&segments.drop);
    }
    advised
}

/// Unmaps what the segments have resident, so that only the pages touched from now on come
/// back, one at a time (the split is in place). Before `main`, the loader ran libc's `ifunc`
/// resolvers and start-up code all over its text, each fault mapping 64 KiB: ~1 MB of libc
/// stayed resident that a run never touches again. Only the pages the loader did not write are
/// given ([`Segments::drop`]), so a page comes back from the file exactly as it was.
fn drop_faulted_before(segments: &[Range<usize>]) {
    for segment in segments {
        // SAFETY: the range lies inside a non-writable segment the loader mapped privately from
        // its file and never unmaps, and no page of it was written (see Segments::drop):
        // MADV_DONTNEED only drops the mappings of pages the next access maps again from the
        // page cache, with the same contents.
        unsafe {
            libc::madvise(
                segment.start as *mut c_void,
                segment.end - segment.start,
                libc::MADV_DONTNEED,
            );
        }
    }
}

/// The start of every other `PAGES_PER_VMA`-page range of `segment`: those to advise.
fn advised_ranges(segment: &Range<usize>, page: usize) -> impl Iterator<Item = usize> {
    let len = PAGES_PER_VMA * page;
    (segment.start..(segment.end + 1).saturating_sub(len)).step_by(2 * len)
}

/// Advises every other range of `segments` (see [`limit_fault_around`]) unless that takes more
/// than `most` calls; returns how many calls succeeded.
fn split(segments: &[Range<usize>], page: usize, most: usize) -> usize {
    let calls: usize = segments
        .iter()
        .map(|s| advised_ranges(s, page).count())
        .sum();
    if calls > most {
        return 0;
    }
    let len = PAGES_PER_VMA * page;
    let mut advised = 0;
    for at in segments.iter().flat_map(|s| advised_ranges(s, page)) {
        // SAFETY: [at, at + len) lies inside a segment the loader mapped and never unmaps
        // (read_only_segments rounds inwards to whole pages); MADV_RANDOM changes no
        // contents, only the VMA's read-ahead flag.
        if unsafe { libc::madvise(at as *mut c_void, len, libc::MADV_RANDOM) } == 0 {
            advised += 1;
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

/// The loaded, non-writable segments of the executable and of the shared libraries it loaded
/// (libc, libm, the loader...), rounded inwards to whole pages.
#[derive(Debug, Default)]
struct Segments {
    /// Every such segment, whole: to split (advising changes no contents).
    split: Vec<Range<usize>>,
    /// The pages of them that still hold the file as it is: to drop. Leaves out the objects
    /// with text relocations, and ends each segment at its file size ([`drop_range`]).
    drop: Vec<Range<usize>>,
}

/// The [`Segments`] of the running process, in pages of `page` bytes.
fn read_only_segments(page: usize) -> Segments {
    let mut found = Segments::default();
    // SAFETY: the callback only reads the program headers dl_iterate_phdr hands it, during the
    // call, and writes through `data`, which points at `found`, alive here.
    unsafe {
        libc::dl_iterate_phdr(Some(file_object), (&raw mut found).cast());
    }
    let inwards = |ranges: Vec<Range<usize>>| -> Vec<Range<usize>> {
        ranges
            .into_iter()
            .map(|r| r.start.next_multiple_of(page)..r.end / page * page)
            .filter(|r| r.start < r.end)
            .collect()
    };
    Segments {
        split: inwards(found.split),
        drop: inwards(found.drop),
    }
}

type Phdr = libc::Elf64_Phdr;

/// The part of a non-writable segment loaded at `base` that the loader left as in the file: up
/// to its file size. Past it, when the memory size is larger, the loader zeroed the rest of the
/// last file page (rounding inwards leaves that page out).
fn drop_range(base: usize, h: &Phdr) -> Range<usize> {
    let start = base + h.p_vaddr as usize;
    start..start + h.p_filesz as usize
}

/// An entry of the dynamic section (`ElfW(Dyn)`: a signed tag and a word, each pointer-sized).
#[repr(C)]
struct Dyn {
    tag: isize,
    value: usize,
}

// Tags and flags of elf.h that libc does not export.
const DT_NULL: isize = 0;
const DT_TEXTREL: isize = 22;
const DT_FLAGS: isize = 30;
const DF_TEXTREL: usize = 0x4;

/// Whether the object loaded at `base` has text relocations: the loader wrote into its
/// non-writable segments (made them writable, relocated, protected them again).
fn has_text_relocations(base: usize, headers: &[Phdr]) -> bool {
    let Some(dynamic) = headers.iter().find(|h| h.p_type == libc::PT_DYNAMIC) else {
        return false;
    };
    let first = (base + dynamic.p_vaddr as usize) as *const Dyn;
    for i in 0..dynamic.p_memsz as usize / std::mem::size_of::<Dyn>() {
        // SAFETY: PT_DYNAMIC lies in a loaded segment of this object, which stays mapped while
        // dl_iterate_phdr runs; `i` stays inside its p_memsz.
        let entry = unsafe { first.add(i).read() };
        match entry.tag {
            DT_NULL => return false,
            DT_TEXTREL => return true,
            DT_FLAGS if entry.value & DF_TEXTREL != 0 => return true,
            _ => {}
        }
    }
    false
}

/// `dl_iterate_phdr` callback: collects the non-writable loaded segments of each object mapped
/// from a file: the executable (listed first, with an empty name) and the libraries (named by
/// their path). The vDSO (named without a `/`) is the kernel's, not a file: left alone.
unsafe extern "C" fn file_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes a valid info for the duration of this call.
    let info = unsafe { &*info };
    if !info.dlpi_name.is_null() {
        // SAFETY: a non-null dlpi_name is a C string, valid during this call.
        let name = unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }.to_bytes();
        if !name.is_empty() && !name.starts_with(b"/") {
            return 0;
        }
    }
    // SAFETY: as above, dlpi_phdr points at dlpi_phnum program headers.
    let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
    // SAFETY: `data` is the `&mut Segments` read_only_segments passed.
    let found = unsafe { &mut *data.cast::<Segments>() };
    let base = info.dlpi_addr as usize;
    let written = has_text_relocations(base, headers);
    for h in headers {
        if h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_W == 0 {
            let start = base + h.p_vaddr as usize;
            found.split.push(start..start + h.p_memsz as usize);
            if !written {
                found.drop.push(drop_range(base, h));
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The executable's mappings in /proc/self/maps: how many, and how many are one VMA of
    /// `PAGES_PER_VMA` pages.
    fn vmas_of_executable(page: usize) -> (usize, usize) {
        let exe = std::fs::read_link("/proc/self/exe").expect("read /proc/self/exe");
        let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
        let lens: Vec<usize> = maps
            .lines()
            .filter(|line| line.ends_with(&*exe.to_string_lossy()))
            .filter_map(|line| {
                let (start, end) = line.split_once(' ')?.0.split_once('-')?;
                Some(usize::from_str_radix(end, 16).ok()? - usize::from_str_radix(start, 16).ok()?)
            })
            .collect();
        let small = lens.iter().filter(|&&l| l == PAGES_PER_VMA * page).count();
        (lens.len(), small)
    }

    #[test]
    fn the_libraries_read_only_segments_are_split_too() {
        let page = page_size().expect("the page size");
        let segments = read_only_segments(page).split;
        let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
        let libc_code: Vec<Range<usize>> = maps
            .lines()
            .filter(|line| line.contains(" r-xp ") && line.contains("/libc.so"))
            .filter_map(|line| {
                let (start, end) = line.split_once(' ')?.0.split_once('-')?;
                Some(usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?)
            })
            .collect();
        assert!(!libc_code.is_empty(), "no libc code mapping in\n{maps}");
        // Any: another test may have split libc already, leaving the page it shares with its
        // next segment (not among the segments, rounded inwards) a mapping of its own.
        assert!(
            libc_code.iter().any(|code| segments
                .iter()
                .any(|s| s.start < code.end && code.start < s.end)),
            "libc's code at {libc_code:x?} is not among the segments to split: {segments:x?}"
        );
        assert!(
            !maps
                .lines()
                .filter(|l| l.ends_with("[vdso]"))
                .filter_map(|l| usize::from_str_radix(l.split_once('-')?.0, 16).ok())
                .any(|vdso| segments.iter().any(|s| s.contains(&vdso))),
            "the vDSO is the kernel's: it must be left alone"
        );
    }

    /// KiB resident of the mappings of /proc/self/smaps that overlap `range`.
    fn resident_kib(range: &Range<usize>) -> usize {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
        let mut inside = false;
        let mut kib = 0;
        for line in smaps.lines() {
            let head = line.split_once(' ').and_then(|(r, _)| r.split_once('-'));
            if let Some((start, end)) = head
                && let (Ok(start), Ok(end)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                )
            {
                inside = start < range.end && range.start < end;
            } else if inside && let Some(rss) = line.strip_prefix("Rss:") {
                kib += rss
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<usize>()
                    .unwrap_or(0);
            }
        }
        kib
    }

    #[test]
    fn pages_mapped_before_the_split_are_dropped() {
        let page = page_size().expect("the page size");
        let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
        // libc: the loader ran its ifunc resolvers and start-up code, each fault mapping
        // 64 KiB; what this test runs of it afterwards comes back a page at a time.
        let libc_at: Vec<usize> = maps
            .lines()
            .filter(|line| line.contains("/libc.so"))
            .filter_map(|line| usize::from_str_radix(line.split_once('-')?.0, 16).ok())
            .collect();
        let segments: Vec<Range<usize>> = read_only_segments(page)
            .drop
            .into_iter()
            .filter(|s| libc_at.iter().any(|at| s.contains(at)))
            .collect();
        assert!(!segments.is_empty(), "libc is not mapped:\n{maps}");
        let before: usize = segments.iter().map(resident_kib).sum();
        assert!(
            before >= 256,
            "libc has only {before} KiB resident: nothing to drop"
        );
        assert!(split(&segments, page, MAX_ADVISE) > 0, "libc was not split");
        drop_faulted_before(&segments);
        let after: usize = segments.iter().map(resident_kib).sum();
        assert!(
            after * 2 <= before,
            "libc had {before} KiB resident, still {after} KiB after the drop"
        );
    }

    /// Builds a library with text relocations (code compiled without -fPIC: the loader
    /// relocates its text in place) and loads it; returns its path.
    fn load_text_relocated_library(dir: &std::path::Path) -> std::path::PathBuf {
        let source = dir.join("textrel.c");
        // 32 KiB of code, so the text segment spans whole pages; `counter` is reached by an
        // absolute address written into the code at load.
        std::fs::write(
            &source,
            "int counter = 1;\nint bump(void) { return ++counter; }\n\
             __asm__(\".text\\n.skip 32768\\n\");\n",
        )
        .expect("write the C source");
        let library = dir.join("libtextrel.so");
        let built = std::process::Command::new("cc")
            .args(["-shared", "-fno-pic", "-mcmodel=large", "-o"])
            .arg(&library)
            .arg(&source)
            .output()
            .expect("run cc (a C compiler is needed to build the text-relocated library)");
        assert!(built.status.success(), "cc failed: {built:?}");
        let path = std::ffi::CString::new(library.to_string_lossy().as_bytes()).expect("a path");
        // SAFETY: the library only defines a function and a variable; it has no constructors.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
        assert!(!handle.is_null(), "dlopen {library:?} failed");
        library
    }

    /// The ranges of /proc/self/maps mapped from `file`.
    fn mappings_of(file: &std::path::Path) -> Vec<Range<usize>> {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
        maps.lines()
            .filter(|line| line.ends_with(&*file.to_string_lossy()))
            .filter_map(|line| {
                let (start, end) = line.split_once(' ')?.0.split_once('-')?;
                Some(usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?)
            })
            .collect()
    }

    #[test]
    fn an_object_with_text_relocations_is_split_but_not_dropped() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let library = load_text_relocated_library(dir.path());
        let mapped = mappings_of(&library);
        assert!(!mapped.is_empty(), "{library:?} is not mapped");
        let overlaps = |ranges: &[Range<usize>]| {
            ranges
                .iter()
                .any(|r| mapped.iter().any(|m| r.start < m.end && m.start < r.end))
        };
        let segments = read_only_segments(page_size().expect("the page size"));
        assert!(
            overlaps(&segments.split),
            "the library's code is not among the segments to split: {mapped:x?}"
        );
        assert!(
            !overlaps(&segments.drop),
            "the loader relocated the library's code in place, yet it is to be dropped: \
             {mapped:x?} in {:x?}",
            segments.drop
        );
    }

    #[test]
    fn a_segment_is_dropped_only_up_to_its_file_size() {
        // SAFETY: Elf64_Phdr is plain integers; all zeroes is a valid value.
        let mut h: Phdr = unsafe { std::mem::zeroed() };
        h.p_type = libc::PT_LOAD;
        h.p_vaddr = 0x3000;
        h.p_filesz = 0x2800;
        h.p_memsz = 0x5000;
        assert_eq!(drop_range(0x10_0000, &h), 0x10_3000..0x10_5800);
    }

    // One test, as both change this process's mappings.
    #[test]
    fn read_only_segments_become_vmas_of_one_page_unless_that_takes_too_many_calls() {
        let page = page_size().expect("the page size");
        let segments = read_only_segments(page).split;
        let pages: usize = segments.iter().map(|s| (s.end - s.start) / page).sum();
        assert!(pages > 50, "found only {pages} pages of read-only segments");

        // Over the cap: nothing is split.
        let before = vmas_of_executable(page);
        assert_eq!(split(&segments, page, 10), 0);
        assert_eq!(vmas_of_executable(page), before, "split past the cap");

        // The first 200 pages of the largest segment (a part, so the test does not depend on
        // the binary's size): every advised range is a VMA of its own, and so is each range
        // left between two.
        let largest = segments
            .iter()
            .max_by_key(|s| s.end - s.start)
            .expect("a segment");
        let part = largest.start..largest.end.min(largest.start + 200 * page);
        let part_pages = (part.end - part.start) / page;
        let advised = split(std::slice::from_ref(&part), page, MAX_ADVISE);
        let (_, small) = vmas_of_executable(page);
        assert!(
            advised * 2 * PAGES_PER_VMA >= part_pages - 2 && small >= before.1 + 2 * advised - 4,
            "{part_pages} pages, {advised} advised, {small} small VMAs: fault-around maps 64 KiB per fault"
        );
    }
}
