"""The one table schema: every column of every table is defined here once.

The Parquet/Delta schemas, the VOTable FIELDs of every response and TAP_SCHEMA are all
derived from these definitions, so names, types, units, UCDs and utypes cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

# VOTable datatype for each arrow type we use (arraysize added for strings/lists).
_VOT = {
    pa.string(): ("char", "*"),
    pa.int16(): ("short", None),
    pa.int32(): ("int", None),
    pa.int64(): ("long", None),
    pa.float64(): ("double", None),
    pa.float32(): ("float", None),
    pa.bool_(): ("boolean", None),
    pa.list_(pa.float64()): ("double", "*"),
}

# column names we use that ADQL reserves (they must be delimited in queries)
ADQL_RESERVED = {"SIZE", "VALUE", "USER", "POSITION", "TIME", "DATE", "REGION"}


@dataclass(frozen=True)
class Column:
    name: str
    arrow: pa.DataType
    description: str
    unit: str | None = None
    ucd: str | None = None
    utype: str | None = None
    principal: bool = False
    indexed: bool = False
    xtype: str | None = None
    std: bool = False
    nullable: bool = True
    internal: bool = False  # stored for the engine (pruning, partitions), never served
    # VOTable datatype override, e.g. a polygon stored as double[] served as STC-S text
    served_as: str | None = None

    @property
    def datatype(self) -> str:
        return self.served_as or _VOT[self.arrow][0]

    @property
    def arraysize(self) -> str | None:
        return "*" if self.served_as == "char" else _VOT[self.arrow][1]

    @property
    def adql_name(self) -> str:
        """The name as ADQL needs it: reserved words delimited (TAP_SCHEMA's "size")."""
        return f'"{self.name}"' if self.name.upper() in ADQL_RESERVED else self.name



@dataclass(frozen=True)
class ForeignKey:
    key_id: str
    target: str
    columns: tuple[tuple[str, str], ...]  # (from_column, target_column)
    description: str = ""


@dataclass(frozen=True)
class Table:
    name: str  # schema-qualified
    description: str
    columns: tuple[Column, ...]
    physical: str  # the Delta table under <archive>/tables/ holding the rows
    partition_by: tuple[str, ...] = ()
    sort_by: str | None = None
    keys: tuple[ForeignKey, ...] = ()
    utype: str | None = None
    table_type: str = "table"
    extra: dict = field(default_factory=dict)

    @property
    def schema_name(self) -> str:
        return self.name.split(".")[0]

    @property
    def served(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if not c.internal)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name.lower():
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.arrow, c.nullable) for c in self.columns])


S, I16, I32, I64, F64 = pa.string(), pa.int16(), pa.int32(), pa.int64(), pa.float64()
POLY = pa.list_(pa.float64())
OC = "obscore:"


def _oc(name, arrow, desc, unit=None, ucd=None, utype=None, **kw) -> Column:
    return Column(name, arrow, desc, unit, ucd, OC + utype if utype else None, std=True, **kw)


OBSCORE_MANDATORY: tuple[Column, ...] = (
    _oc("dataproduct_type", S, "Data product type (image, cube, measurements ...)", None,
        "meta.code.class", "ObsDataset.dataProductType", principal=True),
    _oc("calib_level", I16, "Calibration level: 0 raw ... 4 analysis product", None,
        "meta.code;obs.calib", "ObsDataset.calibLevel", principal=True, nullable=False),
    _oc("obs_collection", S, "Name of the data collection", None, "meta.id",
        "DataID.Collection", principal=True, indexed=True, nullable=False),
    _oc("obs_id", S, "Observation identifier: <planning period>_<large slew>_<small slew>",
        None, "meta.id", "DataID.observationID", principal=True, indexed=True,
        nullable=False),
    _oc("obs_publisher_did", S, "IVOA dataset identifier given by the publisher", None,
        "meta.ref.ivoid", "Curation.PublisherDID", principal=True, indexed=True,
        nullable=False),
    _oc("access_url", S, "URL of the DataLink document listing the product and services",
        None, "meta.ref.url", "Access.Reference", principal=True),
    _oc("access_format", S, "Content type of what access_url returns", None,
        "meta.code.mime", "Access.Format", principal=True),
    _oc("access_estsize", I64, "Estimated size of the file", "kbyte", "phys.size;meta.file",
        "Access.Size", principal=True),
    _oc("target_name", S, "Name of the observed target (null for survey fields)", None,
        "meta.id;src", "Target.Name"),
    _oc("s_ra", F64, "Right ascension (ICRS) of the field centre", "deg", "pos.eq.ra",
        "Char.SpatialAxis.Coverage.Location.Coord.Position2D.Value2.C1", principal=True,
        indexed=True),
    _oc("s_dec", F64, "Declination (ICRS) of the field centre", "deg", "pos.eq.dec",
        "Char.SpatialAxis.Coverage.Location.Coord.Position2D.Value2.C2", principal=True,
        indexed=True),
    _oc("s_fov", F64, "Diameter of the smallest circle around the footprint", "deg",
        "phys.angSize;instr.fov", "Char.SpatialAxis.Coverage.Bounds.Extent.diameter",
        principal=True),
    # no unit: the STC-S text carries its own (ObsCore declares none)
    _oc("s_region", POLY, "Footprint: polygon through the outer corners of the pixel grid",
        None, "pos.outline;obs.field", "Char.SpatialAxis.Coverage.Support.Area",
        xtype="adql:REGION", served_as="char", principal=True, indexed=True),
    _oc("s_resolution", F64, "Spatial resolution (PSF FWHM)", "arcsec",
        "pos.angResolution", "Char.SpatialAxis.Resolution.Refval.value"),
    _oc("s_xel1", I64, "Number of pixels along the first axis", None, "meta.number",
        "Char.SpatialAxis.numBins1"),
    _oc("s_xel2", I64, "Number of pixels along the second axis", None, "meta.number",
        "Char.SpatialAxis.numBins2"),
    _oc("t_min", F64, "Start of the exposure (MJD)", "d", "time.start;obs.exposure",
        "Char.TimeAxis.Coverage.Bounds.Limits.StartTime", principal=True, indexed=True),
    _oc("t_max", F64, "End of the exposure (MJD)", "d", "time.end;obs.exposure",
        "Char.TimeAxis.Coverage.Bounds.Limits.StopTime", principal=True, indexed=True),
    _oc("t_exptime", F64, "Exposure time", "s", "time.duration;obs.exposure",
        "Char.TimeAxis.Coverage.Support.Extent", principal=True),
    _oc("t_resolution", F64, "Temporal resolution", "s", "time.resolution",
        "Char.TimeAxis.Resolution.Refval.value"),
    _oc("t_xel", I64, "Number of time samples", None, "meta.number", "Char.TimeAxis.numBins"),
    _oc("em_min", F64, "Shortest wavelength of the detector band", "m", "em.wl;stat.min",
        "Char.SpectralAxis.Coverage.Bounds.Limits.LoLimit", principal=True, indexed=True),
    _oc("em_max", F64, "Longest wavelength of the detector band", "m", "em.wl;stat.max",
        "Char.SpectralAxis.Coverage.Bounds.Limits.HiLimit", principal=True, indexed=True),
    _oc("em_res_power", F64, "Spectral resolving power", None, "spect.resolution",
        "Char.SpectralAxis.Resolution.ResolPower.refVal"),
    _oc("em_xel", I64, "Number of spectral channels", None, "meta.number",
        "Char.SpectralAxis.numBins"),
    _oc("o_ucd", S, "UCD of the observable", None, "meta.ucd", "Char.ObservableAxis.ucd"),
    _oc("pol_states", S, "Polarization states (null: unpolarized)", None,
        "meta.code;phys.polarization", "Char.PolarizationAxis.stateList"),
    _oc("pol_xel", I64, "Number of polarization samples", None, "meta.number",
        "Char.PolarizationAxis.numBins"),
    _oc("facility_name", S, "Facility", None, "meta.id;instr.tel",
        "Provenance.ObsConfig.Facility.name"),
    _oc("instrument_name", S, "Instrument", None, "meta.id;instr",
        "Provenance.ObsConfig.Instrument.name"),
)

OBSCORE_OPTIONAL: tuple[Column, ...] = (
    _oc("dataproduct_subtype", S, "Archive-specific product type", None, "meta.code.class",
        "ObsDataset.dataProductSubtype"),
    _oc("obs_title", S, "Short human-readable description", None, "meta.title;obs",
        "DataID.Title"),
    _oc("obs_creator_did", S, "Identifier given by the creator", None, "meta.id",
        "DataID.CreatorDID"),
    _oc("obs_release_date", S, "Date the product became public (ISO 8601)", None,
        "time.release", "Curation.releaseDate", xtype="timestamp"),
    _oc("s_pixel_scale", F64, "Pixel scale", "arcsec", "phys.angSize;instr.pixel",
        "Char.SpatialAxis.Sampling.RefVal.SamplingPeriod"),
    Column("energy_bandpassname", S, "Detector band, SPHEREx-D1 ... SPHEREx-D6", None,
           "instr.bandpass", "caom2:Plane.energy.bandpassName", principal=True),
    Column("cloud_access", S, "Where the file lies in the cloud (JSON: aws bucket, key, "
           "region)", None, "meta.ref"),
)

# Engine-only columns: partitions and the spatial pruning aids.
PACKED_REGION = "s_region_bin"
OBSCORE_INTERNAL: tuple[Column, ...] = (
    Column("delivery", S, "Weekly delivery that brought the row", internal=True),
    Column("hpx", I64, "HEALPix (nested, order 12) index of the centre: the sort key",
           internal=True),
    Column("s_rmax", F64, "Largest angle from (s_ra, s_dec) to a footprint vertex", "deg",
           internal=True),
    Column(PACKED_REGION, pa.binary(), "s_region's (ra, dec) vertices as packed "
           "little-endian float64: what spatial predicates read (DuckDB decodes a list "
           "column ~7x slower)", internal=True),
    Column("ingest_id", S, "Ingest run that wrote the row (visible once released)",
           internal=True),
)

OBSERVATION: tuple[Column, ...] = (
    Column("obsid", S, "Observation key: <collection>/<obs_id>/D<detector>", None, "meta.id",
           "caom2:Observation.observationID", principal=True, indexed=True, nullable=False),
    Column("collection", S, "Collection", None, "meta.id", "caom2:Observation.collection",
           principal=True, indexed=True, nullable=False),
    Column("obs_id", S, "Exposure identifier shared by the six detector images", None,
           "meta.id", "caom2:Observation.observationID", principal=True, indexed=True),
    Column("detector", I16, "Detector number 1-6", None, "meta.id;instr.det", principal=True),
    Column("intent", S, "science or calibration", None, "meta.code",
           "caom2:Observation.intent"),
    Column("obs_type", S, "Observation type", None, "meta.code", "caom2:Observation.type"),
    Column("target_name", S, "Target name (null for survey fields)", None, "meta.id;src",
           "caom2:Observation.target.name"),
    Column("telescope_name", S, "Telescope", None, "meta.id;instr.tel",
           "caom2:Observation.telescope.name"),
    Column("instrument_name", S, "Instrument", None, "meta.id;instr",
           "caom2:Observation.instrument.name"),
    Column("planning_period", S, "Survey planning period, e.g. 2025W43", None, "meta.id"),
    Column("delivery", S, "Weekly delivery that brought the row", None, "meta.dataset"),
)

PLANE: tuple[Column, ...] = (
    Column("planeid", S, "Plane key", None, "meta.id", "caom2:Plane.productID", True, True,
           nullable=False),
    Column("obsid", S, "Observation this plane belongs to", None, "meta.id",
           "caom2:Observation.observationID", True, True, nullable=False),
    Column("product_id", S, "Product identifier within the observation", None, "meta.id",
           "caom2:Plane.productID"),
    Column("obs_publisher_did", S, "IVOA dataset identifier", None, "meta.ref.ivoid",
           "caom2:Plane.publisherID", True, True),
    Column("calib_level", I16, "Calibration level", None, "meta.code;obs.calib",
           "caom2:Plane.calibrationLevel", True),
    Column("dataproduct_type", S, "Data product type", None, "meta.id",
           "caom2:Plane.dataProductType", True),
    Column("dataproduct_subtype", S, "Archive-specific product type", None,
           "meta.code.class"),
    Column("energy_bandpassname", S, "Detector band", None, "instr.bandpass",
           "caom2:Plane.energy.bandpassName", True),
    Column("energy_bounds_lower", F64, "Shortest wavelength", "m", "em.wl;stat.min",
           "caom2:Plane.energy.bounds.lower", True),
    Column("energy_bounds_upper", F64, "Longest wavelength", "m", "em.wl;stat.max",
           "caom2:Plane.energy.bounds.upper", True),
    Column("energy_resolving_power", F64, "Spectral resolving power", None,
           "spect.resolution", "caom2:Plane.energy.resolvingPower"),
    Column("time_bounds_lower", F64, "Start of the exposure (MJD)", "d", "time.start",
           "caom2:Plane.time.bounds.lower", True),
    Column("time_bounds_upper", F64, "End of the exposure (MJD)", "d", "time.end",
           "caom2:Plane.time.bounds.upper", True),
    Column("time_exposure", F64, "Exposure time", "s", "time.duration;obs.exposure",
           "caom2:Plane.time.exposure"),
    Column("poly", POLY, "Footprint polygon (ra, dec pairs)", "deg", "pos.outline;obs.field",
           "caom2:Plane.position.bounds", True, True, xtype="polygon"),
    Column("s_ra", F64, "Right ascension of the field centre", "deg", "pos.eq.ra", None,
           True, True),
    Column("s_dec", F64, "Declination of the field centre", "deg", "pos.eq.dec", None,
           True, True),
    Column("s_pixel_scale", F64, "Pixel scale", "arcsec", "phys.angSize;instr.pixel"),
    Column("s_xel1", I32, "Pixels along the first axis", None, "meta.number"),
    Column("s_xel2", I32, "Pixels along the second axis", None, "meta.number"),
    Column("em_xel", I32, "Spectral channels", None, "meta.number"),
    Column("release_date", S, "Release date (ISO 8601)", None, "time.release",
           "caom2:Plane.dataRelease", xtype="timestamp"),
    Column("pipeline_version", S, "Pipeline version", None, "meta.version"),
    Column("psf_fwhm", F64, "PSF full width at half maximum", "arcsec", "phys.angSize"),
)

ARTIFACT: tuple[Column, ...] = (
    Column("artifactid", S, "Artifact key", None, "meta.id", None, True, True,
           nullable=False),
    Column("planeid", S, "Plane this file belongs to", None, "meta.id", None, True, True,
           nullable=False),
    Column("uri", S, "Key of the file under the archive's data/ prefix", None, "meta.ref",
           "caom2:Artifact.uri", True, True),
    Column("product_type", S, "science or calibration", None, "meta.code",
           "caom2:Artifact.productType", True),
    Column("content_type", S, "MIME type", None, "meta.code.mime",
           "caom2:Artifact.contentType", True),
    Column("content_length", I64, "File size", "byte", "phys.size;meta.file",
           "caom2:Artifact.contentLength", True),
    Column("content_checksum", S, "Checksum (md5:<hex>)", None, "meta.checksum",
           "caom2:Artifact.contentChecksum"),
)

PROVENANCE: tuple[Column, ...] = (
    Column("planeid", S, "Science plane", None, "meta.id", None, True, True, nullable=False),
    Column("input_planeid", S, "Calibration plane it used", None, "meta.id", None, True,
           True, nullable=False),
    Column("input_uri", S, "Key of the calibration file", None, "meta.ref", None, True),
    Column("product", S, "Calibration product (gain, dark, psf, spectral_wcs ...)", None,
           "meta.code", None, True),
)

_DELIVERY = Column("delivery", S, "Weekly delivery that brought the row", internal=True)
_COLL = Column("collection", S, "Collection", internal=True)
_RUN = Column("ingest_id", S, "Ingest run that wrote the row", internal=True)

OBSCORE_COLUMNS = OBSCORE_MANDATORY + OBSCORE_OPTIONAL + OBSCORE_INTERNAL
_SPHEREX_ONLY = {"energy_bandpassname", "cloud_access"}

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table("ivoa.obscore", "ObsCore 1.1 view of every collection of the archive",
              tuple(c for c in OBSCORE_COLUMNS if c.name not in _SPHEREX_ONLY),
              physical="ivoa.obscore", partition_by=("obs_collection", "delivery"),
              sort_by="hpx", utype="ivo://ivoa.net/std/ObsCore#core-1.1"),
        Table("spherex.obscore", "ObsCore rows of the SPHEREx collections, with SPHEREx "
              "extras", OBSCORE_COLUMNS, physical="ivoa.obscore",
              partition_by=("obs_collection", "delivery"), sort_by="hpx"),
        Table("spherex.observation", "CAOM observations: one per exposure and detector",
              OBSERVATION + (_RUN,), physical="spherex.observation",
              partition_by=("collection", "delivery")),
        Table("spherex.plane", "CAOM planes: the products of an observation",
              PLANE + (_COLL, _DELIVERY, _RUN), physical="spherex.plane",
              partition_by=("collection", "delivery"), sort_by="s_dec",
              keys=(ForeignKey("plane_obs", "spherex.observation", (("obsid", "obsid"),),
                               "Observation of the plane"),)),
        Table("spherex.artifact", "CAOM artifacts: the files of a plane",
              ARTIFACT + (_COLL, _DELIVERY, _RUN), physical="spherex.artifact",
              partition_by=("collection", "delivery"),
              keys=(ForeignKey("artifact_plane", "spherex.plane",
                               (("planeid", "planeid"),), "Plane of the file"),)),
        Table("spherex.provenance", "Which calibration files each science plane used",
              PROVENANCE + (_COLL, _DELIVERY, _RUN), physical="spherex.provenance",
              partition_by=("collection", "delivery"),
              keys=(ForeignKey("prov_plane", "spherex.plane", (("planeid", "planeid"),),
                               "Science plane"),
                    ForeignKey("prov_input", "spherex.plane",
                               (("input_planeid", "planeid"),), "Calibration plane"))),
    )
}

# The Delta tables under <archive>/tables/, with the columns they store.
PHYSICAL: dict[str, Table] = {
    "ivoa.obscore": TABLES["spherex.obscore"],
    "spherex.observation": TABLES["spherex.observation"],
    "spherex.plane": TABLES["spherex.plane"],
    "spherex.artifact": TABLES["spherex.artifact"],
    "spherex.provenance": TABLES["spherex.provenance"],
}

# What a delivery's record files hold: the CAOM columns without the ingest-added ones.
DELIVERY_RECORDS: dict[str, tuple[Column, ...]] = {
    "observation": OBSERVATION,
    "plane": PLANE,
    "artifact": ARTIFACT,
    "provenance": PROVENANCE,
}

SCHEMA_DESCRIPTIONS = {
    "ivoa": "IVOA standard data models (ObsCore)",
    "spherex": "SPHEREx archive tables: ObsCore with extras and the CAOM tables",
    "TAP_SCHEMA": "Self-description of this TAP service",
    "tap_upload": "Tables uploaded with the query",
}


def record_schema(kind: str) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.arrow) for c in DELIVERY_RECORDS[kind]])
