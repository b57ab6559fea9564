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

/// The operating system's generator, as the `rsa` crate takes one.
pub struct OsRandom;

impl rsa::rand_core::RngCore for OsRandom {
    fn next_u32(&mut self) -> u32 {
        u32::from_le_bytes(crate::random::bytes::<4>())
    }

    fn next_u64(&mut self) -> u64 {
        u64::from_le_bytes(crate::random::bytes::<8>())
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(32) {
            let random = crate::random::bytes::<32>();
            chunk.copy_from_slice(&random[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rsa::rand_core::CryptoRng for OsRandom {}
