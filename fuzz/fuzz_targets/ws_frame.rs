//! `decode_frame` on arbitrary bytes; every frame it accepts re-encodes to
//! exactly the input. The body is `agentos_fuzz::ws_frame`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| agentos_fuzz::ws_frame(data));
