//! AES-256-XTS (IEEE 1619) for block volumes, from aws-lc's `EVP_aes_256_xts`: the one place
//! in sealstore with `unsafe`, kept to a thin wrapper over the EVP calls.
//!
//! Volumes use 4 KiB sectors with tweak = the sector's index (4096-byte units, as a 128-bit
//! little-endian number): dm-crypt's `plain64` IV with `iv_large_sectors`, not LUKS2's
//! default of counting 512-byte units. See `docs/FORMATS.md`, "Encrypted volume".
//!
//! An [`Xts`] keeps one aws-lc context per direction with the key schedule set once; each
//! data unit only sets its tweak (re-keying per sector halved the throughput; `cargo bench --bench
//! xts` measures it).
//! Contexts are not shareable between threads: make one `Xts` per thread from an [`XtsKey`].

use std::ffi::c_int;
use std::ptr::NonNull;

use aws_lc_sys as ffi;
use thiserror::Error;
use zeroize::Zeroizing;

/// Bytes of an XTS-AES-256 key: two AES-256 keys.
pub const XTS_KEY_LEN: usize = 64;
/// Bytes of a volume sector (one XTS data unit).
pub const SECTOR_SIZE: usize = 4096;

/// XTS failures.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum XtsError {
    /// The two halves of the key are equal, which XTS forbids (IEEE 1619-2018 §5.1).
    #[error("the two halves of an XTS key must differ")]
    WeakKey,
    /// A data unit is not a whole number of 16-byte blocks, or is empty, or too large.
    #[error("an XTS data unit must be 16 bytes to 16 MiB and a multiple of 16; got {0}")]
    BadLength(usize),
    /// A buffer of sectors is not a whole number of sectors.
    #[error("{0} bytes is not a whole number of {SECTOR_SIZE}-byte sectors")]
    NotWholeSectors(usize),
    /// aws-lc refused an operation (out of memory, or a bug here).
    #[error("aws-lc XTS failed in {0}")]
    Backend(&'static str),
}

/// A 512-bit XTS key; zeroized on drop, never printed.
#[derive(Clone)]
pub struct XtsKey(Zeroizing<[u8; XTS_KEY_LEN]>);

impl std::fmt::Debug for XtsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("XtsKey(<redacted>)")
    }
}

impl XtsKey {
    /// The key from its 64 bytes (data key ‖ tweak key), refusing equal halves.
    pub fn from_bytes(bytes: &[u8; XTS_KEY_LEN]) -> Result<Self, XtsError> {
        if bytes[..32] == bytes[32..] {
            return Err(XtsError::WeakKey);
        }
        Ok(XtsKey(Zeroizing::new(*bytes)))
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, XtsError> {
        let mut bytes = Zeroizing::new([0u8; XTS_KEY_LEN]);
        loop {
            aws_lc_rs::rand::fill(bytes.as_mut()).map_err(|_| XtsError::Backend("random key"))?;
            if let Ok(key) = Self::from_bytes(&bytes) {
                return Ok(key);
            }
        }
    }

    /// The key bytes (the tests compare against a reference XTS with them).
    #[cfg(test)]
    pub(crate) fn expose(&self) -> &[u8; XTS_KEY_LEN] {
        &self.0
    }
}

/// One EVP cipher context, freed on drop.
struct Context(NonNull<ffi::EVP_CIPHER_CTX>);

impl Context {
    fn new(key: &XtsKey, encrypt: bool) -> Result<Self, XtsError> {
        // SAFETY: EVP_CIPHER_CTX_new has no preconditions; it returns null only when out of
        // memory, which is checked.
        let raw = unsafe { ffi::EVP_CIPHER_CTX_new() };
        let ctx = Context(NonNull::new(raw).ok_or(XtsError::Backend("EVP_CIPHER_CTX_new"))?);
        let init = if encrypt {
            ffi::EVP_EncryptInit_ex
        } else {
            ffi::EVP_DecryptInit_ex
        };
        // SAFETY: the context is valid (just created); EVP_aes_256_xts returns a static
        // cipher; the key pointer is valid for the 64 bytes this cipher reads; a null IV
        // means "set later", and a null engine is the default.
        let ok = unsafe {
            init(
                ctx.0.as_ptr(),
                ffi::EVP_aes_256_xts(),
                std::ptr::null_mut(),
                key.0.as_ptr(),
                std::ptr::null(),
            )
        };
        if ok != 1 {
            return Err(XtsError::Backend("cipher init"));
        }
        Ok(ctx)
    }

    /// Transforms `buf` in place as one data unit under `tweak`.
    fn apply(&mut self, tweak: u128, buf: &mut [u8], encrypt: bool) -> Result<(), XtsError> {
        let len = c_int::try_from(buf.len()).map_err(|_| XtsError::BadLength(buf.len()))?;
        let iv = tweak.to_le_bytes();
        let ctx = self.0.as_ptr();
        let (null_cipher, null_engine, null_key) = (std::ptr::null(), std::ptr::null_mut(), std::ptr::null());
        // SAFETY: the context was initialised with the XTS cipher and its key in `new`;
        // null cipher, engine and key keep them, and the IV pointer is valid for the 16
        // bytes XTS reads.
        let ok = unsafe {
            if encrypt {
                ffi::EVP_EncryptInit_ex(ctx, null_cipher, null_engine, null_key, iv.as_ptr())
            } else {
                ffi::EVP_DecryptInit_ex(ctx, null_cipher, null_engine, null_key, iv.as_ptr())
            }
        };
        if ok != 1 {
            return Err(XtsError::Backend("tweak"));
        }
        let mut written: c_int = 0;
        let data = buf.as_mut_ptr();
        // SAFETY: `buf` is valid for reads and writes of `len` bytes; XTS supports in-place
        // operation (input and output the same buffer) and writes exactly `len` bytes (no
        // padding; the caller checked the length is a whole number of blocks).
        let ok = unsafe {
            if encrypt {
                ffi::EVP_EncryptUpdate(ctx, data, &mut written, data, len)
            } else {
                ffi::EVP_DecryptUpdate(ctx, data, &mut written, data, len)
            }
        };
        if ok != 1 || written != len {
            return Err(XtsError::Backend("update"));
        }
        Ok(())
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the pointer came from EVP_CIPHER_CTX_new and is freed once, here; freeing
        // also clears the key schedule.
        unsafe { ffi::EVP_CIPHER_CTX_free(self.0.as_ptr()) }
    }
}

/// AES-256-XTS with its key schedules set up, for one thread.
pub struct Xts {
    encrypt: Context,
    decrypt: Context,
}

impl std::fmt::Debug for Xts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Xts(<key redacted>)")
    }
}

// SAFETY: an `Xts` owns its two contexts exclusively (no aliasing pointers exist), and
// aws-lc contexts may be used from any thread as long as not from two at once, which `&mut
// self` on every operation guarantees. It is deliberately not `Sync`.
unsafe impl Send for Xts {}

fn check_unit(len: usize) -> Result<(), XtsError> {
    if len < 16 || !len.is_multiple_of(16) || len > (16 << 20) {
        return Err(XtsError::BadLength(len));
    }
    Ok(())
}

impl Xts {
    /// Contexts for `key`.
    pub fn new(key: &XtsKey) -> Result<Self, XtsError> {
        Ok(Xts {
            encrypt: Context::new(key, true)?,
            decrypt: Context::new(key, false)?,
        })
    }

    /// Encrypts one data unit in place under `tweak` (IEEE 1619's data unit sequence number).
    pub fn encrypt_unit(&mut self, tweak: u128, unit: &mut [u8]) -> Result<(), XtsError> {
        check_unit(unit.len())?;
        self.encrypt.apply(tweak, unit, true)
    }

    /// Decrypts one data unit in place under `tweak`.
    pub fn decrypt_unit(&mut self, tweak: u128, unit: &mut [u8]) -> Result<(), XtsError> {
        check_unit(unit.len())?;
        self.decrypt.apply(tweak, unit, false)
    }

    /// Encrypts whole sectors in place; the first is sector `first`.
    pub fn encrypt_sectors(&mut self, first: u64, sectors: &mut [u8]) -> Result<(), XtsError> {
        self.sectors(first, sectors, true)
    }

    /// Decrypts whole sectors in place; the first is sector `first`.
    pub fn decrypt_sectors(&mut self, first: u64, sectors: &mut [u8]) -> Result<(), XtsError> {
        self.sectors(first, sectors, false)
    }

    fn sectors(&mut self, first: u64, sectors: &mut [u8], encrypt: bool) -> Result<(), XtsError> {
        if !sectors.len().is_multiple_of(SECTOR_SIZE) {
            return Err(XtsError::NotWholeSectors(sectors.len()));
        }
        let ctx = if encrypt { &mut self.encrypt } else { &mut self.decrypt };
        for (i, sector) in sectors.chunks_exact_mut(SECTOR_SIZE).enumerate() {
            ctx.apply(u128::from(first) + i as u128, sector, encrypt)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap()
    }

    /// IEEE 1619-2007 Annex B, vector 10: XTS-AES-256, data unit sequence number 0xff,
    /// 512-byte data unit of bytes 0x00..0xff twice.
    const V10_KEY: &str = "27182818284590452353602874713526624977572470936999595749669676273141592653589793238462643383279502884197169399375105820974944592";
    const V10_CT: &str = "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b5d31e276f8fe4a8d66b317f9ac683f44680a86ac35adfc3345befecb4bb188fd5776926c49a3095eb108fd1098baec70aaa66999a72a82f27d848b21d4a741b0c5cd4d5fff9dac89aeba122961d03a757123e9870f8acf1000020887891429ca2a3e7a7d7df7b10355165c8b9a6d0a7de8b062c4500dc4cd120c0f7418dae3d0b5781c34803fa75421c790dfe1de1834f280d7667b327f6c8cd7557e12ac3a0f93ec05c52e0493ef31a12d3d9260f79a289d6a379bc70c50841473d1a8cc81ec583e9645e07b8d9670655ba5bbcfecc6dc3966380ad8fecb17b6ba02469a020a84e18e8f84252070c13e9f1f289be54fbc481457778f616015e1327a02b140f1505eb309326d68378f8374595c849d84f4c333ec4423885143cb47bd71c5edae9be69a2ffeceb1bec9de244fbe15992b11b77c040f12bd8f6a975a44a0f90c29a9abc3d4d893927284c58754cce294529f8614dcd2aba991925fedc4ae74ffac6e333b93eb4aff0479da9a410e4450e0dd7ae4c6e2910900575da401fc07059f645e8b7e9bfdef33943054ff84011493c27b3429eaedb4ed5376441a77ed43851ad77f16f541dfd269d50d6a5f14fb0aab1cbb4c1550be97f7ab4066193c4caa773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151";

    #[test]
    fn ieee_1619_vector_10() {
        let key = XtsKey::from_bytes(&hex(V10_KEY).try_into().unwrap()).unwrap();
        let mut xts = Xts::new(&key).unwrap();
        let plain: Vec<u8> = (0..512).map(|i| i as u8).collect();
        let mut unit = plain.clone();
        xts.encrypt_unit(0xff, &mut unit).unwrap();
        assert_eq!(unit, hex(V10_CT));
        xts.decrypt_unit(0xff, &mut unit).unwrap();
        assert_eq!(unit, plain);
    }

    #[test]
    fn matches_rustcrypto_xts_mode_on_4k_sectors() {
        use aes::cipher::KeyInit;
        let key = XtsKey::generate().unwrap();
        let reference = xts_mode::Xts128::new(
            aes::Aes256::new_from_slice(&key.expose()[..32]).unwrap(),
            aes::Aes256::new_from_slice(&key.expose()[32..]).unwrap(),
        );
        let mut data: Vec<u8> = (0..4 * SECTOR_SIZE).map(|i| (i * 7 % 251) as u8).collect();
        let mut expected = data.clone();
        reference.encrypt_area(&mut expected, SECTOR_SIZE, 1000, xts_mode::get_tweak_default);
        let mut xts = Xts::new(&key).unwrap();
        let plain = data.clone();
        xts.encrypt_sectors(1000, &mut data).unwrap();
        assert_eq!(data, expected);
        xts.decrypt_sectors(1000, &mut data).unwrap();
        assert_eq!(data, plain);
    }

    #[test]
    fn sectors_differ_and_bad_inputs_are_refused() {
        let mut xts = Xts::new(&XtsKey::generate().unwrap()).unwrap();
        let mut two = vec![0u8; 2 * SECTOR_SIZE];
        xts.encrypt_sectors(5, &mut two).unwrap();
        assert_ne!(two[..SECTOR_SIZE], two[SECTOR_SIZE..], "the tweak separates sectors");
        assert_eq!(
            xts.encrypt_sectors(0, &mut [0u8; 100]).unwrap_err(),
            XtsError::NotWholeSectors(100)
        );
        assert_eq!(
            xts.encrypt_unit(0, &mut [0u8; 15]).unwrap_err(),
            XtsError::BadLength(15)
        );
        assert_eq!(XtsKey::from_bytes(&[3u8; 64]).unwrap_err(), XtsError::WeakKey);
    }
}
