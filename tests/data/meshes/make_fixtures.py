"""Write the small mesh files in this folder, each as another tool writes it.

Not part of the test run, and the tests never import vtk: run it by hand, in an environment that
has the `vtk` wheel (written with VTK 9.7), to regenerate the files:

    python tests/data/meshes/make_fixtures.py

Every file holds the same closed sphere (radius 10, 98 points, 192 triangles, or the same
surface as strips, cells or polygons); `expected.json` records the point and triangle counts
and the volume VTK computes for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import meshio
import numpy as np
import trimesh
import vtk
from vtk.util.numpy_support import vtk_to_numpy

HERE = Path(__file__).resolve().parent


def sphere() -> vtk.vtkPolyData:
    src = vtk.vtkSphereSource()
    src.SetRadius(10.0)
    src.SetCenter(1.0, 2.0, 3.0)
    src.SetThetaResolution(12)
    src.SetPhiResolution(10)
    src.Update()
    return src.GetOutput()


def arrays(poly):
    v = vtk_to_numpy(poly.GetPoints().GetData()).astype(np.float64)
    f = vtk_to_numpy(poly.GetPolys().GetConnectivityArray()).reshape(-1, 3).astype(np.int64)
    n = vtk_to_numpy(poly.GetPointData().GetNormals()).astype(np.float64)
    return v, f, n


def legacy(poly, name, *, version, binary, kind=vtk.vtkPolyDataWriter, header=None):
    w = kind()
    w.SetInputData(poly)
    w.SetFileName(str(HERE / name))
    w.SetFileVersion(version)
    if header:
        w.SetHeader(header)
    w.SetFileTypeToBinary() if binary else w.SetFileTypeToASCII()
    w.Write()


def vtp(poly, name, *, mode, compress=None, encode=True):
    w = vtk.vtkXMLPolyDataWriter()
    w.SetInputData(poly)
    w.SetFileName(str(HERE / name))
    {"ascii": w.SetDataModeToAscii, "binary": w.SetDataModeToBinary,
     "appended": w.SetDataModeToAppended}[mode]()
    w.SetEncodeAppendedData(encode)
    if compress == "zlib":
        w.SetCompressorTypeToZLib()
    elif compress == "lzma":
        w.SetCompressorTypeToLZMA()
    else:
        w.SetCompressorTypeToNone()
    w.Write()


def main() -> None:
    poly = sphere()
    v, f, n = arrays(poly)
    mass = vtk.vtkMassProperties()
    mass.SetInputData(poly)
    mass.Update()
    expected = {"n_vertices": len(v), "n_faces": len(f), "volume": mass.GetVolume()}

    # VTK's own writers.
    legacy(poly, "vtk42_ascii.vtk", version=42, binary=False)
    legacy(poly, "vtk42_binary.vtk", version=42, binary=True)
    legacy(poly, "vtk51_ascii.vtk", version=51, binary=False)
    legacy(poly, "vtk51_binary.vtk", version=51, binary=True)
    strip = vtk.vtkStripper()
    strip.SetInputData(poly)
    strip.Update()
    legacy(strip.GetOutput(), "vtk42_strips.vtk", version=42, binary=False)
    legacy(strip.GetOutput(), "vtk51_strips_binary.vtk", version=51, binary=True)
    grid = vtk.vtkAppendFilter()
    grid.SetInputData(poly)
    grid.Update()
    legacy(grid.GetOutput(), "vtk42_ugrid_binary.vtk", version=42, binary=True,
           kind=vtk.vtkUnstructuredGridWriter)
    legacy(grid.GetOutput(), "vtk51_ugrid_ascii.vtk", version=51, binary=False,
           kind=vtk.vtkUnstructuredGridWriter)
    vtp(poly, "vtk_ascii.vtp", mode="ascii")
    vtp(poly, "vtk_binary.vtp", mode="binary")
    vtp(poly, "vtk_appended_raw.vtp", mode="appended", encode=False)
    vtp(poly, "vtk_appended_base64_zlib.vtp", mode="appended", compress="zlib")
    vtp(poly, "vtk_binary_zlib.vtp", mode="binary", compress="zlib")
    vtp(poly, "vtk_binary_lzma.vtp", mode="binary", compress="lzma")
    for name, binary in (("vtk_ascii.stl", False), ("vtk_binary.stl", True)):
        w = vtk.vtkSTLWriter()
        w.SetInputData(poly)
        w.SetFileName(str(HERE / name))
        w.SetFileTypeToBinary() if binary else w.SetFileTypeToASCII()
        w.Write()
    for name, mode in (("vtk_ascii.ply", "ascii"), ("vtk_binary_le.ply", "le"),
                       ("vtk_binary_be.ply", "be")):
        w = vtk.vtkPLYWriter()
        w.SetInputData(poly)
        w.SetFileName(str(HERE / name))
        if mode == "ascii":
            w.SetFileTypeToASCII()
        else:
            w.SetFileTypeToBinary()
            w.SetDataByteOrderToLittleEndian() if mode == "le" else w.SetDataByteOrderToBigEndian()
        w.Write()
    w = vtk.vtkOBJWriter()
    w.SetInputData(poly)
    w.SetFileName(str(HERE / "vtk.obj"))
    w.Write()

    # trimesh and meshio exports.
    tm = trimesh.Trimesh(v, f, process=False)
    for ext in ("ply", "stl", "obj", "off"):
        tm.export(HERE / f"trimesh.{ext}")
    mm = meshio.Mesh(v, [("triangle", f)])
    meshio.write(HERE / "meshio.vtk", mm, binary=False)
    meshio.write(HERE / "meshio_ascii.ply", mm, binary=False)
    meshio.write(HERE / "meshio.off", mm)

    # Hand-written in the conventions of other tools.
    _slicer(v, f, n)
    _meshlab(v, f)
    _ircadb_obj(v, f, n)
    _shapeworks(v, f)
    (HERE / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")


def _rows(a, fmt):
    return "\n".join(" ".join(fmt % x for x in row) for row in a)


def _slicer(v, f, n):
    """3D Slicer: legacy polydata with a SPACE=LPS title, point normals; 4.2 and 5.1."""
    lps = v * np.array([-1.0, -1.0, 1.0])
    nl = n * np.array([-1.0, -1.0, 1.0])
    ff = f[:, ::-1]  # the mirror flips the winding back to outward
    tris = "\n".join(f"3 {a} {b} {c}" for a, b, c in ff)
    head = "# vtk DataFile Version 4.2\nSPACE=LPS\nASCII\nDATASET POLYDATA\n"
    (HERE / "slicer_lps_42.vtk").write_text(
        head + f"POINTS {len(v)} float\n{_rows(lps, '%.9g')}\n"
        f"POLYGONS {len(f)} {4 * len(f)}\n{tris}\n"
        f"POINT_DATA {len(v)}\nNORMALS Normals float\n{_rows(nl, '%.6g')}\n", newline="\n")
    (HERE / "slicer_lps_51.vtk").write_bytes((
        "# vtk DataFile Version 5.1\nSPACE=LPS\nBINARY\nDATASET POLYDATA\n"
        f"POINTS {len(v)} float\n").encode() + lps.astype(">f4").tobytes()
        + f"\nPOLYGONS {len(f) + 1} {3 * len(f)}\nOFFSETS vtktypeint64\n".encode()
        + np.arange(0, 3 * len(f) + 1, 3).astype(">i8").tobytes()
        + b"\nCONNECTIVITY vtktypeint64\n" + ff.astype(">i8").tobytes()
        + f"\nPOINT_DATA {len(v)}\nNORMALS Normals float\n".encode() + nl.astype(">f4").tobytes()
        + b"\nMETADATA\nINFORMATION 0\n\n")


def _meshlab(v, f):
    """MeshLab (VCG): PLY with a VCGLIB comment, vertex normals and colours, face colours."""
    rng = np.random.default_rng(0)
    head = ["ply", "format binary_little_endian 1.0", "comment VCGLIB generated",
            f"element vertex {len(v)}", "property float x", "property float y",
            "property float z", "property float nx", "property float ny", "property float nz",
            "property uchar red", "property uchar green", "property uchar blue",
            "property uchar alpha", "property float quality",
            f"element face {len(f)}", "property list uchar int vertex_indices",
            "property uchar red", "property uchar green", "property uchar blue",
            "property uchar alpha", "end_header"]
    vd = np.zeros(len(v), dtype=[("xyz", "<f4", 3), ("n", "<f4", 3), ("rgba", "u1", 4),
                                 ("q", "<f4")])
    vd["xyz"] = v
    vd["n"] = v / np.linalg.norm(v, axis=1, keepdims=True)
    vd["rgba"] = rng.integers(0, 255, (len(v), 4))
    fd = np.zeros(len(f), dtype=[("k", "u1"), ("idx", "<i4", 3), ("rgba", "u1", 4)])
    fd["k"], fd["idx"], fd["rgba"] = 3, f, 200
    (HERE / "meshlab_vcg.ply").write_bytes(
        ("\n".join(head) + "\n").encode() + vd.tobytes() + fd.tobytes())


def _ircadb_obj(v, f, n):
    """A liver-surface OBJ as in 3D-IRCADb: normals indexed apart from vertices (more normals
    than vertices), groups, materials, smoothing, negative indices, quads, CRLF line ends."""
    normals = np.concatenate([n, n[:20]])  # more normals than vertices
    lines = ["# exported surface", "mtllib liver.mtl", "o liver", "g liver_surface",
             "usemtl liver", "s 1"]
    lines += [f"v {a:.9g} {b:.9g} {c:.9g}" for a, b, c in v]
    lines += [f"vt {x:.3f} 0.5" for x in np.linspace(0, 1, len(v))]
    lines += [f"vn {a:.6g} {b:.6g} {c:.6g}" for a, b, c in normals]
    nv = len(v)
    for k, (a, b, c) in enumerate(f):
        m = (k * 7) % len(normals)
        if k % 3 == 0:
            lines.append(f"f {a + 1}//{m + 1} {b + 1}//{m + 1} {c + 1}//{m + 1}")
        elif k % 3 == 1:
            lines.append("f " + " ".join(f"{i + 1}/{i + 1}/{m + 1}" for i in (a, b, c)))
        else:  # relative (negative) indices
            lines.append(f"f {a - nv} {b - nv} {c - nv}")
    (HERE / "ircadb_liver.obj").write_bytes(("\r\n".join(lines) + "\r\n").encode())


def _shapeworks(v, f):
    """ShapeWorks: legacy 4.2 binary polydata with dataset FIELD data and a point scalar."""
    dist = np.linalg.norm(v - v.mean(0), axis=1)
    body = (f"# vtk DataFile Version 4.2\nvtk output\nBINARY\nDATASET POLYDATA\n"
            "FIELD FieldData 1\nGroomed 1 1 int\n").encode() + np.array([1], ">i4").tobytes()
    body += f"\nPOINTS {len(v)} double\n".encode() + v.astype(">f8").tobytes()
    cells = np.concatenate([np.full((len(f), 1), 3), f], axis=1).astype(">i4")
    body += f"\nPOLYGONS {len(f)} {cells.size}\n".encode() + cells.tobytes()
    body += (f"\nCELL_DATA {len(f)}\nFIELD FieldData 1\nregion 1 {len(f)} int\n").encode()
    body += np.zeros(len(f), ">i4").tobytes()
    body += (f"\nPOINT_DATA {len(v)}\nSCALARS distance double 1\nLOOKUP_TABLE default\n"
             ).encode() + dist.astype(">f8").tobytes() + b"\n"
    (HERE / "shapeworks_42_binary.vtk").write_bytes(body)


if __name__ == "__main__":
    main()
