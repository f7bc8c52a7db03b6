//! The image processor's settings of a `qwen2_5_vl` model directory: the
//! `image_processor` object of `processor_config.json` (what transformers
//! 5 writes, and reads first) or, without one, `preprocessor_config.json`
//! (what Qwen's checkpoints ship, with `min_pixels`/`max_pixels` or
//! `size.shortest_edge`/`size.longest_edge`). The patch, merge and frame
//! sizes the file names must agree with `vision_config`.

use std::path::Path;

use serde_json::{json, Value};

use super::error::{io_error, ModelError};
use super::qwen_vision::{ImageProcessing, QwenVisionConfig};

/// The file a saved model's settings go to; [`read`] reads it where
/// `processor_config.json` has no `image_processor` object.
pub const FILE: &str = "preprocessor_config.json";

/// Reads the settings in `dir` into `vision.processing`.
pub fn read(dir: &Path, vision: &mut QwenVisionConfig) -> Result<(), ModelError> {
    // transformers 5's processor reads the `image_processor` object of
    // `processor_config.json` before `preprocessor_config.json`.
    let processor = dir.join("processor_config.json");
    let processor_value = load(&processor)?;
    let (path, value) = match processor_value
        .as_ref()
        .and_then(|v| v.get("image_processor").filter(|p| !p.is_null()).cloned())
    {
        Some(v) => (processor, v),
        None => match load(&dir.join(FILE))? {
            Some(v) => (dir.join(FILE), v),
            // The processor's file is there, laid out otherwise.
            None if processor_value.is_some() => {
                return Err(ModelError::Config {
                    path: processor,
                    reason: format!(
                        "holds no `image_processor` object, and the folder has no `{FILE}`: the image processor's settings go in one of them (transformers 5 writes the first, Qwen's checkpoints ship the second)"
                    ),
                })
            }
            None => {
                return Err(ModelError::MissingFile {
                    dir: dir.to_path_buf(),
                    file: FILE,
                    hint: "the image processor's settings (or `processor_config.json` with an `image_processor` object)",
                })
            }
        },
    };
    let invalid = |reason: String| ModelError::Config {
        path: path.clone(),
        reason,
    };
    vision.processing = parse(&value, vision).map_err(invalid)?;
    vision.validate().map_err(|reason| ModelError::Config {
        path: path.clone(),
        reason,
    })
}

/// The settings in one processor object, checked against `vision`.
fn parse(value: &Value, vision: &QwenVisionConfig) -> Result<ImageProcessing, String> {
    let defaults = ImageProcessing::default();
    let size = value.get("size").filter(|s| !s.is_null());
    // transformers refuses a `size` without the pixel range's two keys
    // (`{"height": 224, "width": 224}` is another processor's); it was
    // read as the default range.
    if let Some(size) = size {
        let has = |key: &str| size.get(key).is_some_and(|v| !v.is_null());
        let pair = (has("shortest_edge") && has("longest_edge"))
            || (has("min_pixels") && has("max_pixels"));
        if !size.is_object() || !pair {
            return Err(format!(
                "`size` is {size}; Qwen2.5-VL's processor takes its pixel range there as `shortest_edge` and `longest_edge` (the fewest and the most pixels of a resized image, e.g. `{{\"shortest_edge\": 3136, \"longest_edge\": 12845056}}`)"
            ));
        }
    }
    let pixels = |legacy: &str, key: &str, default: usize| -> Result<usize, String> {
        // `min_pixels` at the top, `size.shortest_edge` (transformers 4.5x
        // and 5), or `size.min_pixels` (transformers 4.45's layout).
        let found = [
            (legacy.to_string(), value.get(legacy)),
            (format!("size.{key}"), size.and_then(|s| s.get(key))),
            (format!("size.{legacy}"), size.and_then(|s| s.get(legacy))),
        ]
        .into_iter()
        .find(|(_, v)| v.is_some_and(|v| !v.is_null()));
        let (name, found) = found.unwrap_or((legacy.to_string(), None));
        match found {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| format!("`{name}` is {v}, not a pixel count")),
        }
    };
    for (key, expected) in [
        ("patch_size", vision.patch_size),
        ("merge_size", vision.spatial_merge_size),
        ("temporal_patch_size", vision.temporal_patch_size),
    ] {
        if let Some(found) = value.get(key).and_then(Value::as_u64) {
            if found as usize != expected {
                return Err(format!(
                    "`{key}` is {found}, but the model's `vision_config` says {expected}"
                ));
            }
        }
    }
    // Three numbers, one per channel, or one for all three (as
    // transformers takes it).
    let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3], String> {
        match value.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Number(n)) => n
                .as_f64()
                .map(|x| [x as f32; 3])
                .ok_or_else(|| format!("`{key}` is {n}, not a number")),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|_| format!("`{key}` is {v}, not three numbers (or one)")),
        }
    };
    // saferc resizes, rescales and normalises as Qwen's processors ship
    // (bicubic); a processor set otherwise is refused, never ignored.
    for key in ["do_resize", "do_rescale", "do_normalize"] {
        if value.get(key).and_then(Value::as_bool) == Some(false) {
            return Err(format!(
                "`{key}` is false; saferc always does it (as Qwen2.5-VL's processor ships): remove the setting or set it to true"
            ));
        }
    }
    if let Some(resample) = value.get("resample").filter(|v| !v.is_null()) {
        if resample.as_u64() != Some(3) {
            return Err(format!(
                "`resample` is {resample}; saferc resizes bicubic (3), as Qwen2.5-VL's processor ships"
            ));
        }
    }
    if let Some(rescale) = value.get("rescale_factor").and_then(Value::as_f64) {
        if (rescale - 1.0 / 255.0).abs() > 1e-9 {
            return Err(format!(
                "`rescale_factor` is {rescale}; saferc scales pixels by 1/255"
            ));
        }
    }
    Ok(ImageProcessing {
        min_pixels: pixels("min_pixels", "shortest_edge", defaults.min_pixels)?,
        max_pixels: pixels("max_pixels", "longest_edge", defaults.max_pixels)?,
        image_mean: triple("image_mean", defaults.image_mean)?,
        image_std: triple("image_std", defaults.image_std)?,
    })
}

fn load(path: &Path) -> Result<Option<Value>, ModelError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    super::error::parse_json(path, &text).map(Some)
}

/// The `preprocessor_config.json` value [`read`] reads back (the layout of
/// Qwen's checkpoints).
pub fn to_json(vision: &QwenVisionConfig) -> Value {
    let p = &vision.processing;
    json!({
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
        "min_pixels": p.min_pixels,
        "max_pixels": p.max_pixels,
        "patch_size": vision.patch_size,
        "merge_size": vision.spatial_merge_size,
        "temporal_patch_size": vision.temporal_patch_size,
        "image_mean": p.image_mean,
        "image_std": p.image_std,
        "do_resize": true,
        "do_rescale": true,
        "do_normalize": true,
        "resample": 3,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn vision() -> QwenVisionConfig {
        serde_json::from_value(json!({
            "depth": 1, "hidden_size": 16, "intermediate_size": 8, "num_heads": 2,
            "out_hidden_size": 8, "window_size": 112
        }))
        .unwrap()
    }

    #[test]
    fn both_spellings_of_the_pixel_range_are_read() {
        let legacy = json!({"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14,
                            "merge_size": 2, "temporal_patch_size": 2});
        let p = parse(&legacy, &vision()).unwrap();
        assert_eq!((p.min_pixels, p.max_pixels), (3136, 12_845_056));
        let sized = json!({"size": {"shortest_edge": 784, "longest_edge": 12544}});
        let p = parse(&sized, &vision()).unwrap();
        assert_eq!((p.min_pixels, p.max_pixels), (784, 12544));
        // transformers 4.45 wrote the pixel range into `size` by its own names.
        let old = json!({"size": {"min_pixels": 1568, "max_pixels": 6272}});
        let p = parse(&old, &vision()).unwrap();
        assert_eq!((p.min_pixels, p.max_pixels), (1568, 6272));
        assert_eq!(p.image_mean, ImageProcessing::default().image_mean);
    }

    #[test]
    fn processor_config_json_is_read_before_preprocessor_config_json() {
        let dir = std::env::temp_dir().join(format!("saferc-processor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |file: &str, v: Value| std::fs::write(dir.join(file), v.to_string()).unwrap();
        write(FILE, json!({"min_pixels": 784, "max_pixels": 3136}));
        write(
            "processor_config.json",
            json!({"image_processor": {"size": {"shortest_edge": 784, "longest_edge": 12544}}}),
        );
        let mut v = vision();
        read(&dir, &mut v).unwrap();
        assert_eq!(v.processing.max_pixels, 12544);
        // Without an `image_processor` object (or with a null one),
        // preprocessor_config.json.
        write(
            "processor_config.json",
            json!({"processor_class": "Qwen2_5_VLProcessor"}),
        );
        read(&dir, &mut v).unwrap();
        assert_eq!(v.processing.max_pixels, 3136);
        write("processor_config.json", json!({"image_processor": null}));
        read(&dir, &mut v).unwrap();
        assert_eq!(v.processing.max_pixels, 3136);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_number_stands_for_all_three_channels() {
        let p = parse(
            &json!({"image_mean": 0.5, "image_std": [0.5, 0.25, 0.125]}),
            &vision(),
        )
        .unwrap();
        assert_eq!(p.image_mean, [0.5; 3]);
        assert_eq!(p.image_std, [0.5, 0.25, 0.125]);
    }

    #[test]
    fn a_processor_at_odds_with_the_model_is_refused() {
        let err = parse(&json!({"patch_size": 16}), &vision()).unwrap_err();
        assert!(err.contains("`patch_size` is 16"), "{err}");
        let err = parse(&json!({"image_std": [1, 2]}), &vision()).unwrap_err();
        assert!(err.contains("not three numbers (or one)"), "{err}");
        let err = parse(
            &json!({"size": {"shortest_edge": -1, "longest_edge": 9}}),
            &vision(),
        )
        .unwrap_err();
        assert!(err.contains("`size.shortest_edge` is -1"), "{err}");
        for size in [
            json!("x"),
            json!({"height": 224, "width": 224}),
            json!({"shortest_edge": 784}),
        ] {
            let err = parse(&json!({ "size": size }), &vision()).unwrap_err();
            assert!(
                err.contains("takes its pixel range there as `shortest_edge` and `longest_edge`"),
                "{err}"
            );
        }
        for key in ["do_resize", "do_rescale", "do_normalize"] {
            let err = parse(&json!({ key: false }), &vision()).unwrap_err();
            assert!(err.contains(&format!("`{key}` is false")), "{err}");
        }
        let err = parse(&json!({"resample": 2}), &vision()).unwrap_err();
        assert!(err.contains("bicubic (3)"), "{err}");
        let err = parse(&json!({"rescale_factor": 1.0}), &vision()).unwrap_err();
        assert!(err.contains("1/255"), "{err}");
    }

    #[test]
    fn written_settings_read_back() {
        let mut v = vision();
        v.processing.min_pixels = 784;
        let p = parse(&to_json(&v), &v).unwrap();
        assert_eq!(p, v.processing);
    }
}
