//! Randomness for secrets. Every random protocol value comes from here (the OS generator).

/// `N` random bytes from the operating system.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if let Err(e) = getrandom::fill(&mut buf) {
        // Without an entropy source no secret can be made safely; stopping is the only option.
        unreachable!("the operating system's random generator failed: {e}");
    }
    buf
}

/// A random token of `N` bytes as lower-case hex.
pub fn hex_token<const N: usize>() -> String {
    hex::encode(bytes::<N>())
}
