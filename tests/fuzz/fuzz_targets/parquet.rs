#![no_main]
// A cold-tier object uploaded and read back as the broker does (see targets::parquet).
// The cold tier contains panics of the parquet and arrow crates
// (strata_tier::codec::contain): they are errors there, so they must not abort here.
// libFuzzer's hook aborts on every panic, caught or not; this one only stays silent, so
// a panic that escapes our code still aborts (it unwinds into libFuzzer) and is found.
libfuzzer_sys::fuzz_target!(
    init: {
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| strata_fuzz::targets::parquet(data)
);
