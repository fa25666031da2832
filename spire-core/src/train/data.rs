//! Training data: a folder of photos with an optional `captions.tsv` (`file<TAB>caption`, a
//! header line allowed), sampled as random crops at random scales, randomly flipped.

use std::path::Path;

use crate::degrade::{ops, Rgb};
use crate::error::{Error, Result};
use crate::image::{ColorType, ImageData};
use crate::rng::Rng;

/// One photo, kept as 8-bit interleaved RGB.
#[derive(Debug, Clone)]
struct Photo {
    name: String,
    width: usize,
    height: usize,
    rgb: Vec<u8>,
    caption: String,
}

/// Photos and captions in memory.
#[derive(Debug, Clone)]
pub struct Dataset {
    photos: Vec<Photo>,
}

/// A training sample: a clean crop and its caption.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The crop, planar RGB in [0, 1].
    pub image: Rgb,
    /// Its caption (empty if none).
    pub caption: String,
}

impl Dataset {
    /// Loads every PNG/JPEG in `dir` except the names in `exclude` (held-out photos), with
    /// captions from `captions` if given.
    ///
    /// # Errors
    /// [`Error::Io`] for unreadable files; [`Error::InvalidArgument`] if no photo remains.
    pub fn from_folder(dir: &Path, captions: Option<&Path>, exclude: &[String]) -> Result<Self> {
        let mut caps = std::collections::HashMap::new();
        if let Some(c) = captions {
            let text = std::fs::read_to_string(c).map_err(|e| Error::io(c, e))?;
            for (i, line) in text.lines().enumerate() {
                let Some((f, cap)) = line.split_once('\t') else {
                    continue;
                };
                if i == 0 && f == "file" {
                    continue;
                }
                caps.insert(f.trim().to_string(), cap.trim().to_string());
            }
        }
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                let l = n.to_lowercase();
                (l.ends_with(".png") || l.ends_with(".jpg") || l.ends_with(".jpeg")) && !exclude.contains(n)
            })
            .collect();
        names.sort();
        let mut photos = Vec::with_capacity(names.len());
        for name in names {
            let img = crate::io::load_image(dir.join(&name))?;
            let rgb = match (&img.data, img.color) {
                (ImageData::U8(d), ColorType::Rgb) => d.clone(),
                (ImageData::U8(d), ColorType::Rgba) => d.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
                (ImageData::U8(d), ColorType::Gray) => d.iter().flat_map(|&v| [v, v, v]).collect(),
                _ => continue,
            };
            let caption = caps.get(&name).cloned().unwrap_or_default();
            photos.push(Photo {
                name,
                width: img.width,
                height: img.height,
                rgb,
                caption,
            });
        }
        if photos.is_empty() {
            return Err(Error::invalid_arg(
                "data",
                format!("no training photos in {}", dir.display()),
            ));
        }
        Ok(Self { photos })
    }

    /// Number of photos.
    pub fn len(&self) -> usize {
        self.photos.len()
    }

    /// Whether there are no photos.
    pub fn is_empty(&self) -> bool {
        self.photos.is_empty()
    }

    /// The photo names.
    pub fn names(&self) -> Vec<&str> {
        self.photos.iter().map(|p| p.name.as_str()).collect()
    }

    /// The centred `size × size` crop of the photo `name` (or of its largest square when
    /// smaller).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if there is no such photo.
    pub fn center_crop(&self, name: &str, size: usize) -> Result<Sample> {
        let p = self.photos.iter().find(|p| p.name == name).ok_or_else(|| {
            Error::invalid_arg("validation", format!("no photo `{name}` in the data folder"))
        })?;
        let s = size.min(p.width).min(p.height);
        let (x0, y0) = ((p.width - s) / 2, (p.height - s) / 2);
        let n = s * s;
        let mut data = vec![0f32; 3 * n];
        for y in 0..s {
            for x in 0..s {
                let src = ((y0 + y) * p.width + x0 + x) * 3;
                for c in 0..3 {
                    data[c * n + y * s + x] = p.rgb[src + c] as f32 / 255.0;
                }
            }
        }
        Ok(Sample {
            image: Rgb {
                width: s,
                height: s,
                data,
            },
            caption: p.caption.clone(),
        })
    }

    /// The photo's largest centred square resized to `size × size` (PIL bicubic,
    /// antialiased): the whole picture's framing, which its caption describes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if there is no such photo.
    pub fn square(&self, name: &str, size: usize) -> Result<Sample> {
        let big = self.center_crop(name, usize::MAX)?;
        let s = big.image.width;
        if s == size {
            return Ok(big);
        }
        let data = crate::imageops::resize_bicubic(&big.image.data, 3, s, s, size, size);
        Ok(Sample {
            image: Rgb {
                width: size,
                height: size,
                data: data.into_iter().map(|v| v.clamp(0.0, 1.0)).collect(),
            },
            caption: big.caption,
        })
    }

    /// A random `crop × crop` sample: a region `crop · s` wide (s uniform in `scale`, capped by
    /// the photo) resized to `crop` (PIL bicubic, antialiased), flipped left–right with
    /// probability ½.
    pub fn sample(&self, rng: &mut Rng, crop: usize, scale: (f64, f64)) -> Sample {
        let p = &self.photos[rng.int(0, self.photos.len() as i64 - 1) as usize];
        let s = rng.range(scale.0, scale.1);
        let region = ((crop as f64 * s).round() as usize).clamp(2, p.width.min(p.height));
        let x0 = rng.int(0, (p.width - region) as i64) as usize;
        let y0 = rng.int(0, (p.height - region) as i64) as usize;
        let flip = rng.chance(0.5);
        let n = region * region;
        let mut data = vec![0f32; 3 * n];
        for y in 0..region {
            for x in 0..region {
                let sx = if flip { x0 + region - 1 - x } else { x0 + x };
                let src = ((y0 + y) * p.width + sx) * 3;
                for c in 0..3 {
                    data[c * n + y * region + x] = p.rgb[src + c] as f32 / 255.0;
                }
            }
        }
        let img = Rgb {
            width: region,
            height: region,
            data,
        };
        let image = if region == crop {
            img
        } else {
            ops::resize_bicubic(&img, crop, crop).clip()
        };
        Sample {
            image,
            caption: p.caption.clone(),
        }
    }
}
