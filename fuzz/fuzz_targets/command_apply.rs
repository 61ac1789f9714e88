#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    steadfast::fuzzing::command_apply(data);
});
