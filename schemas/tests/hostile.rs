//! Hostile documents are refused early: how far the reader got (the error's position) and how
//! much memory it allocated (a counting allocator) show that none of them costs what it asks for.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use xeno_schemas::Document;
use xeno_schemas::documents::{EnvironmentalRequirements, TaskDescription};

/// Counts live and peak heap bytes per thread, so that a test can bound what a parse on its
/// own thread allocates while other tests run.
struct CountingAllocator;

thread_local! {
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn add(bytes: usize, sign: isize) {
    let delta = isize::try_from(bytes).unwrap_or(isize::MAX) * sign;
    // `try_with` because the allocator also runs while thread-locals are torn down.
    let _ = LIVE_BYTES.try_with(|live| {
        live.set(live.get() + delta);
        let _ = PEAK_BYTES.try_with(|peak| peak.set(peak.get().max(live.get())));
    });
}

// SAFETY: defers every operation to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            add(layout.size(), 1);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(pointer, layout) };
        add(layout.size(), -1);
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Parses `bytes` and returns the first error and the peak heap growth during the parse.
fn refuse<T: Document + std::fmt::Debug>(bytes: &[u8]) -> (String, usize) {
    let before = LIVE_BYTES.with(Cell::get);
    PEAK_BYTES.with(|peak| peak.set(before));
    let result = T::parse(bytes);
    let peak = usize::try_from(PEAK_BYTES.with(Cell::get) - before).unwrap_or(0);
    let error = result.expect_err("hostile document must be refused");
    (error.first().expect("an error").to_string(), peak)
}

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

#[test]
fn twenty_megabytes_of_text_are_refused_unread() {
    let mut document = b"<EnvironmentalRequirements><Basic><EnvName>".to_vec();
    document.resize(20 * MIB, b'x');
    document.extend_from_slice(b"</EnvName></Basic></EnvironmentalRequirements>");
    let (error, peak) = refuse::<EnvironmentalRequirements>(&document);
    assert!(
        error.contains("document is 20971566 bytes; the limit is 65536 bytes"),
        "{error}"
    );
    assert!(error.ends_with("at 1:1"), "{error}");
    assert!(peak < 4 * KIB, "allocated {peak} bytes");
}

#[test]
fn a_hundred_thousand_levels_of_nesting_are_refused() {
    // Too big for the requirements limit...
    let deep = "<a>".repeat(100_000);
    let (error, _) = refuse::<EnvironmentalRequirements>(deep.as_bytes());
    assert!(error.contains("the limit is 65536 bytes"), "{error}");
    // ...and within the task limit, refused at depth 33, having read 32 tags.
    let deep = format!("<TaskDescription>{}", "<a>".repeat(80_000));
    let (error, peak) = refuse::<TaskDescription>(deep.as_bytes());
    assert_eq!(error, "elements nest deeper than 32 levels at 1:111");
    assert!(peak < 64 * KIB, "allocated {peak} bytes");
}

#[test]
fn entity_bombs_are_refused_at_the_doctype() {
    let bomb = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY a \"{}\">{}]><r>&z;</r>",
        "x".repeat(1000),
        (b'b'..=b'z')
            .map(|c| {
                let previous = char::from(c - 1);
                format!(
                    "<!ENTITY {} \"{}\">",
                    char::from(c),
                    format!("&{previous};").repeat(10)
                )
            })
            .collect::<String>()
    );
    let (error, peak) = refuse::<EnvironmentalRequirements>(bomb.as_bytes());
    assert_eq!(
        error,
        "DOCTYPE declarations are not accepted (no DTDs, no entity definitions) at 1:22"
    );
    assert!(peak < 16 * KIB, "allocated {peak} bytes");
}

#[test]
fn many_elements_and_attributes_are_capped() {
    let wide = format!(
        "<TaskDescription>{}</TaskDescription>",
        "<x/>".repeat(10_000)
    );
    let (error, peak) = refuse::<TaskDescription>(wide.as_bytes());
    assert_eq!(error, "more than 4096 elements at 1:16398");
    assert!(peak < 2 * MIB, "allocated {peak} bytes");

    let attributes: String = (0..100).map(|i| format!(" a{i}=\"{i}\"")).collect();
    let (error, _) = refuse::<EnvironmentalRequirements>(
        format!("<EnvironmentalRequirements{attributes}/>").as_bytes(),
    );
    assert!(
        error.starts_with("more than 32 attributes on one element"),
        "{error}"
    );
}

#[test]
fn errors_in_a_large_document_are_capped() {
    let args: String = (0..2000).map(|_| "<Arg><x/></Arg>").collect();
    let task = format!(
        "<TaskDescription><WasmModule sha256=\"{}\"/><Args>{args}</Args></TaskDescription>",
        "a".repeat(64)
    );
    let errors = TaskDescription::parse(task.as_bytes()).expect_err("invalid");
    assert_eq!(errors.errors.len(), xeno_schemas::schema::ERRORS_MAX);
}
