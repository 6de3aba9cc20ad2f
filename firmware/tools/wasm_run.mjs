// Run a script on MicroPython's webassembly port (npm: @micropython/micropython-webassembly-pyscript,
// a 32-bit interpreter) with a firmware build as its code and a folder as its flash.
//
// Usage: node wasm_run.mjs PACKAGE_DIR CODE_DIR FLASH_DIR SCRIPT_FILE [ROMFS_IMAGE]
// CODE_DIR (a `firstparty build --arch none` output) is copied to /code and put on sys.path, FLASH_DIR's
// files to /flash, the working directory. With ROMFS_IMAGE (`mpremote romfs build`), the image is
// given to the port as its ROM partition (outside the GC heap, as flash is on a board) and code
// imports from /rom first, run in place. The script's output goes to stdout; an uncaught Python
// exception prints its traceback to stderr and exits 1. The port grows its heap on demand, so
// gc.mem_alloc() measures what is held; no heap size can be imposed.
//
// A line `# --- step` splits the script into steps, each run by its own runPython call: this port's
// gc.collect() frees nothing that was allocated during the call that runs it (measured with 1.29),
// so a figure taken at the start of a step sees only what the steps before it still hold.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [packageDir, codeDir, flashDir, scriptFile, romfsImage] = process.argv.slice(2);
if (!scriptFile) {
  console.error("usage: node wasm_run.mjs PACKAGE_DIR CODE_DIR FLASH_DIR SCRIPT_FILE");
  process.exit(2);
}
const { loadMicroPython } = await import(pathToFileURL(path.join(packageDir, "micropython.mjs")).href);
const options = { stdout: (text) => process.stdout.write(text), linebuffer: false };
if (romfsImage) options.romfs = new Uint8Array(fs.readFileSync(romfsImage));
const mp = await loadMicroPython(options);

function copyInto(source, target) {
  mp.FS.mkdir(target);
  for (const name of fs.readdirSync(source)) {
    const from = path.join(source, name);
    const to = target + "/" + name;
    if (fs.statSync(from).isDirectory()) copyInto(from, to);
    else mp.FS.writeFile(to, fs.readFileSync(from));
  }
}
copyInto(codeDir, "/code");
copyInto(flashDir, "/flash");
try {
  mp.runPython("import os, sys\nsys.path[:] = ['/code', '.frozen']\nos.chdir('/flash')");
  if (romfsImage) {
    mp.runPython("import vfs\ntry:\n    vfs.mount(vfs.VfsRom(vfs.rom_ioctl(2, 0)), '/rom')\nexcept OSError:\n    pass  # mounted at start-up\nsys.path.insert(0, '/rom')");
  }
  for (const step of fs.readFileSync(scriptFile, "utf8").split(/^# --- step$/m)) mp.runPython(step);
} catch (error) {
  if (error.name !== "PythonError") throw error;
  console.error(error.message);
  process.exit(1);
}
