"""Build SAFE products in a temporary folder from real Sentinel-2 bands (Major TOM's N0400 cell): JPEG 2000
band files in the real folder layout, and product metadata XML with the real element names (PSD 14)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

MAJORTOM_N0400 = "majortom-core-s2l2a/0U/0U_199R/S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419"
PRODUCT = {
    "L2A": "S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419",
    "L1C": "S2A_MSIL1C_20220706T085611_N0400_R007_T33NZA_20220706T105510",
}
GRANULE = {"L2A": "L2A_T33NZA_A036788_20220706T090802", "L1C": "L1C_T33NZA_A036788_20220706T090802"}
# Spectral_Information bandId -> physical band, as in every product's metadata.
BAND_IDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
L2A_BANDS = {
    10: ("B02", "B03", "B04", "B08"),
    20: ("B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B11", "B12"),
    60: ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B09", "B11", "B12"),
}
NATIVE = {
    "B01": 60,
    "B02": 10,
    "B03": 10,
    "B04": 10,
    "B05": 20,
    "B06": 20,
    "B07": 20,
    "B08": 10,
    "B8A": 20,
    "B09": 60,
    "B11": 20,
    "B12": 20,
}
SIZE_10M = 600  # a crop of the 1068 px cell: larger than 2 x 224, so it is cut into 3 x 3 chips
CLOUD_BLOCK_20M = (0, 0, 56, 112)  # col, row, width, height of the SCL block marked cloud (class 9)
SHADOW_BLOCK_20M = (56, 0, 56, 112)  # marked cloud shadow (class 3)


def write_jp2(path: Path, data: np.ndarray, crs, transform, block: int | None = None) -> None:
    """Lossless JPEG 2000, as ESA's products are; in `block` px tiles (real products: 1024) when given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="JP2OpenJPEG",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=data.dtype.name,
        crs=crs,
        transform=transform,
        QUALITY=100,
        REVERSIBLE="YES",
        **(dict(BLOCKXSIZE=block, BLOCKYSIZE=block) if block else {}),
    )
    with rasterio.open(path, "w", **profile) as out:
        out.write(data, 1)


def band_at(shared_data: Path, band: str, resolution: int) -> tuple[np.ndarray, object, object]:
    """The crop of a Major TOM band at a resolution (decimated by averaging where ESA's 20/60 m copies are)."""
    size = SIZE_10M * 10 // resolution
    with rasterio.open(shared_data / MAJORTOM_N0400 / f"{band}.tif") as source:
        scale = NATIVE[band] / 10
        native = int(round(SIZE_10M / scale))
        data = source.read(
            1, window=Window(0, 0, native, native), out_shape=(size, size), resampling=Resampling.average
        )
        transform = source.transform @ source.transform.scale(native / size)
        return data, source.crs, transform


def build_safe(shared_data: Path, folder: Path, level: str = "L2A") -> Path:
    product = folder / f"{PRODUCT[level]}.SAFE"
    img_data = product / "GRANULE" / GRANULE[level] / "IMG_DATA"
    stem = "T33NZA_20220706T085611"
    if level == "L2A":
        for resolution, bands in L2A_BANDS.items():
            for band in bands:
                data, crs, transform = band_at(shared_data, band, resolution)
                write_jp2(img_data / f"R{resolution}m" / f"{stem}_{band}_{resolution}m.jp2", data, crs, transform)
        scl = np.full((SIZE_10M // 2, SIZE_10M // 2), 4, np.uint8)  # 4: vegetation
        for block, value in ((CLOUD_BLOCK_20M, 9), (SHADOW_BLOCK_20M, 3)):
            col, row, width, height = block
            scl[row : row + height, col : col + width] = value
        _, crs, transform = band_at(shared_data, "B05", 20)
        write_jp2(img_data / "R20m" / f"{stem}_SCL_20m.jp2", scl, crs, transform)
        (product / "MTD_MSIL2A.xml").write_text(metadata_xml(level))
    else:
        for band, resolution in NATIVE.items():
            data, crs, transform = band_at(shared_data, band, resolution)
            write_jp2(img_data / f"{stem}_{band}.jp2", data, crs, transform)
        (product / "MTD_MSIL1C.xml").write_text(metadata_xml(level))
    (product / "manifest.safe").write_text("<xfdu:XFDU/>")
    (img_data.parent / "MTD_TL.xml").write_text("<n1:Level-2A_Tile_ID/>")
    return product


def per_band_copy(safe: Path, folder: Path, level: str = "L2A") -> Path:
    """The bands of a built L2A SAFE as a per-band folder (Major TOM style, named by the product), each band
    at its native resolution, as GeoTIFFs: the same product in another layout."""
    per_band = folder / PRODUCT[level]
    per_band.mkdir(parents=True)
    for jp2 in (safe / "GRANULE" / GRANULE[level] / "IMG_DATA").rglob("*.jp2"):
        band, resolution = jp2.stem.split("_")[-2:]
        if band != "SCL" and (band in ("B02", "B03", "B04", "B08")) == (resolution == "10m"):
            with rasterio.open(jp2) as source:
                profile = dict(source.profile, driver="GTiff", compress="deflate")
                profile.pop("QUALITY", None), profile.pop("REVERSIBLE", None)
                with rasterio.open(per_band / f"{band}.tif", "w", **profile) as out:
                    out.write(source.read())
    return per_band


MAJORTOM_N9999 = "majortom-core-s2l2a/199U/199U_1099R/S2B_MSIL2A_20200223T032739_N9999_R018_T48QUE_20230924T183543"


def build_scene_safe(shared_data: Path, folder: Path, size_10m: int, block: int = 1024) -> Path:
    """A whole L2A granule of `size_10m` px at 10 m in real format (JPEG 2000 in `block` px tiles, each band
    at its native resolution, SCL at 20 m), from the 1068 px Major TOM cell of NE Thailand mirrored out to
    the size: real texture in every block. Offset-free (N9999), so its metadata lists no offsets."""
    cell = shared_data / MAJORTOM_N9999
    product = folder / f"{PRODUCT['L2A']}.SAFE"
    img_data = product / "GRANULE" / GRANULE["L2A"] / "IMG_DATA"
    stem = "T33NZA_20220706T085611"
    for band, resolution in (*NATIVE.items(), ("SCL", 20)):
        size = round(size_10m * 10 / resolution)
        with rasterio.open(cell / ("cloud_mask.tif" if band == "SCL" else f"{band}.tif")) as source:
            native = 1068 * 10 // resolution  # the cell's size at the band's resolution (the mask is at 10 m)
            data = source.read(1, out_shape=(native, native))
            transform, crs = source.transform @ source.transform.scale(source.width / native), source.crs
        if band == "SCL":
            data = np.where(data == 0, 4, np.where(data == 3, 3, 9)).astype(np.uint8)  # clear, shadow, cloud
        data = np.pad(data, [(0, max(0, size - data.shape[0])), (0, max(0, size - data.shape[1]))], "symmetric")
        write_jp2(
            img_data / f"R{resolution}m" / f"{stem}_{band}_{resolution}m.jp2", data[:size, :size], crs, transform, block
        )
    (product / "MTD_MSIL2A.xml").write_text(
        metadata_xml("L2A").replace(
            "\n".join(line for line in metadata_xml("L2A").splitlines() if "BOA_ADD_OFFSET" in line), ""
        )
    )
    return product


def zip_product(product: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as out:
        for path in sorted(product.rglob("*")):
            if path.is_file():
                out.write(path, path.relative_to(product.parent).as_posix())
    return archive


def metadata_xml(level: str) -> str:
    """A minimal product metadata file with the real element names and nesting (PSD 14.9)."""
    l2a = level == "L2A"
    root = "Level-2A_User_Product" if l2a else "Level-1C_User_Product"
    offsets = "\n".join(
        f'        <{"BOA_ADD_OFFSET" if l2a else "RADIO_ADD_OFFSET"} band_id="{i}">-1000</{"BOA_ADD_OFFSET" if l2a else "RADIO_ADD_OFFSET"}>'
        for i in range(len(BAND_IDS))
    )
    offset_list = (
        f"      <BOA_ADD_OFFSET_VALUES_LIST>\n{offsets}\n      </BOA_ADD_OFFSET_VALUES_LIST>"
        if l2a
        else f"      <Radiometric_Offset_List>\n{offsets}\n      </Radiometric_Offset_List>"
    )
    spectral = "\n".join(
        f'        <Spectral_Information bandId="{i}" physicalBand="{name}"><RESOLUTION>{NATIVE.get(_canonical(name), 60)}</RESOLUTION></Spectral_Information>'
        for i, name in enumerate(BAND_IDS)
    )
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:{root} xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_{level.replace("L", "Level-")}.xsd" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_START_TIME>2022-07-06T08:56:11.024Z</PRODUCT_START_TIME>
      <PRODUCT_STOP_TIME>2022-07-06T08:56:11.024Z</PRODUCT_STOP_TIME>
      <PRODUCT_URI>{PRODUCT[level]}.SAFE</PRODUCT_URI>
      <PROCESSING_LEVEL>{level.replace("L", "Level-")}</PROCESSING_LEVEL>
      <PRODUCT_TYPE>S2MSI{level[1:]}</PRODUCT_TYPE>
      <PROCESSING_BASELINE>04.00</PROCESSING_BASELINE>
      <GENERATION_TIME>2022-07-06T15:34:19.000000Z</GENERATION_TIME>
      <Datatake datatakeIdentifier="GS2A_20220706T085611_036788_N04.00">
        <SPACECRAFT_NAME>Sentinel-2A</SPACECRAFT_NAME>
        <DATATAKE_SENSING_START>2022-07-06T08:56:11.024Z</DATATAKE_SENSING_START>
        <SENSING_ORBIT_NUMBER>7</SENSING_ORBIT_NUMBER>
        <SENSING_ORBIT_DIRECTION>DESCENDING</SENSING_ORBIT_DIRECTION>
      </Datatake>
    </Product_Info>
    <Product_Image_Characteristics>
      <Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX></Special_Values>
      <QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST>
{offset_list}
      <Spectral_Information_List>
{spectral}
      </Spectral_Information_List>
    </Product_Image_Characteristics>
  </n1:General_Info>
  <n1:Quality_Indicators_Info>
    <Cloud_Coverage_Assessment>12.345678</Cloud_Coverage_Assessment>
  </n1:Quality_Indicators_Info>
</n1:{root}>
"""


def _canonical(physical: str) -> str:
    return f"B{int(physical[1:]):02d}" if physical[1:].isdigit() else physical
