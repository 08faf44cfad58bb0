// Repairs TorchSharp's native library on Linux systems whose libstdc++ predates GCC 13.
//
// libLibTorchSharp.so (TorchSharp 0.107, built with GCC 13) declares a version need on
// GLIBCXX_3.4.32 for a single symbol, std::ios_base_library_init(), that GCC 13's <iostream>
// only references to pin the library version and never calls. Debian 12's libstdc++ stops at
// GLIBCXX_3.4.30, so the dynamic loader refuses the whole library. Renaming that version-need
// entry to GLIBCXX_3.4.30 (same length string in .dynstr, new ELF hash in .gnu.version_r) makes
// the loader accept it; the symbol stays unresolved and unused, exactly as it is at run time on
// newer systems.
//
// This file is compiled by MSBuild (RoslynCodeTaskFactory, see build/TorchSharpNative.targets)
// and runs after build and publish on the copies in the output folder only. It never touches
// the NuGet cache: the patched bytes go to a new file that replaces the output copy, so a hard
// link into the cache would be broken rather than written through.
using System;
using System.Collections.Generic;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public class PatchTorchSharpNative : Task
{
    const string Needed = "GLIBCXX_3.4.32";
    const string Available = "GLIBCXX_3.4.30";

    /// <summary>Folders to search (recursively) for libLibTorchSharp.so.</summary>
    [Required]
    public string[] Folders { get; set; } = Array.Empty<string>();

    public override bool Execute()
    {
        if (!File.Exists("/proc/self/exe")) return true; // not Linux
        if (SystemHasVersion(Needed))
        {
            Log.LogMessage(MessageImportance.Low, "libstdc++ provides " + Needed + "; TorchSharp native library left as is.");
            return true;
        }
        if (!SystemHasVersion(Available))
        {
            Log.LogMessage(MessageImportance.Normal, "No libstdc++ with " + Available + " found; TorchSharp native library left as is.");
            return true;
        }
        foreach (var folder in Folders)
        {
            if (!Directory.Exists(folder)) continue;
            foreach (var path in Directory.EnumerateFiles(folder, "libLibTorchSharp.so", SearchOption.AllDirectories))
            {
                try
                {
                    var result = PatchFile(path);
                    Log.LogMessage(MessageImportance.Normal, "TorchSharp native fix: " + path + ": " + result);
                }
                catch (Exception ex)
                {
                    Log.LogError("TorchSharp native fix failed for " + path + ": " + ex.Message);
                    return false;
                }
            }
        }
        return !Log.HasLoggedErrors;
    }

    static readonly string[] LibDirs =
    {
        "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib/aarch64-linux-gnu",
        "/usr/lib64", "/lib64", "/usr/lib", "/lib",
    };

    /// <summary>True when any system libstdc++.so.6 defines the given symbol version.</summary>
    public static bool SystemHasVersion(string version)
    {
        var pattern = Encoding.ASCII.GetBytes(version + "\0");
        foreach (var dir in LibDirs)
        {
            var lib = Path.Combine(dir, "libstdc++.so.6");
            if (File.Exists(lib) && IndexOf(File.ReadAllBytes(lib), pattern, 0) >= 0) return true;
        }
        return false;
    }

    /// <summary>Rewrites the GLIBCXX_3.4.32 version need in one ELF file; returns what it did.</summary>
    public static string PatchFile(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var changed = Patch(bytes);
        if (!changed) return "no " + Needed + " need (already patched or not required)";
        var tmp = path + ".patching";
        File.WriteAllBytes(tmp, bytes);
        File.Delete(path); // unlink first: a hard link into the NuGet cache is broken, never written through
        File.Move(tmp, path);
        return "version need " + Needed + " renamed to " + Available;
    }

    /// <summary>Patches an ELF64 little-endian image in memory. Returns false when nothing needed changing.</summary>
    public static bool Patch(byte[] elf)
    {
        if (elf.Length < 64 || elf[0] != 0x7F || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (elf[4] != 2 || elf[5] != 1) throw new InvalidDataException("not a 64-bit little-endian ELF file");

        long shoff = (long)BitConverter.ToUInt64(elf, 0x28);
        int shentsize = BitConverter.ToUInt16(elf, 0x3A);
        int shnum = BitConverter.ToUInt16(elf, 0x3C);
        const uint SHT_GNU_verneed = 0x6ffffffe;

        bool changed = false;
        for (int i = 0; i < shnum; i++)
        {
            long sh = shoff + (long)i * shentsize;
            if (sh + 64 > elf.Length) throw new InvalidDataException("section header out of range");
            uint type = BitConverter.ToUInt32(elf, (int)sh + 4);
            if (type != SHT_GNU_verneed) continue;
            long offset = (long)BitConverter.ToUInt64(elf, (int)sh + 0x18);
            uint link = BitConverter.ToUInt32(elf, (int)sh + 0x28);
            uint count = BitConverter.ToUInt32(elf, (int)sh + 0x2C); // sh_info: number of verneed entries
            long strsh = shoff + (long)link * shentsize;
            long strOffset = (long)BitConverter.ToUInt64(elf, (int)strsh + 0x18);

            long vn = offset;
            for (uint n = 0; n < count; n++)
            {
                int cnt = BitConverter.ToUInt16(elf, (int)vn + 2);
                uint aux = BitConverter.ToUInt32(elf, (int)vn + 8);
                uint next = BitConverter.ToUInt32(elf, (int)vn + 12);
                long va = vn + aux;
                for (int a = 0; a < cnt; a++)
                {
                    uint name = BitConverter.ToUInt32(elf, (int)va + 8);
                    uint vnaNext = BitConverter.ToUInt32(elf, (int)va + 12);
                    int nameAt = (int)(strOffset + name);
                    if (ReadCString(elf, nameAt) == Needed)
                    {
                        Encoding.ASCII.GetBytes(Available).CopyTo(elf, nameAt);
                        BitConverter.GetBytes(ElfHash(Available)).CopyTo(elf, (int)va);
                        changed = true;
                    }
                    va += vnaNext;
                    if (vnaNext == 0) break;
                }
                if (next == 0) break;
                vn += next;
            }
        }
        return changed;
    }

    /// <summary>The System V ABI ELF hash used by vna_hash.</summary>
    public static uint ElfHash(string name)
    {
        uint h = 0;
        foreach (char c in name)
        {
            h = (h << 4) + (byte)c;
            uint g = h & 0xf0000000;
            if (g != 0) h ^= g >> 24;
            h &= ~g;
        }
        return h;
    }

    static string ReadCString(byte[] data, int at)
    {
        int end = at;
        while (end < data.Length && data[end] != 0) end++;
        return Encoding.ASCII.GetString(data, at, end - at);
    }

    static int IndexOf(byte[] haystack, byte[] needle, int start)
    {
        int last = haystack.Length - needle.Length;
        for (int i = start; i <= last; i++)
        {
            if (haystack[i] != needle[0]) continue;
            int j = 1;
            while (j < needle.Length && haystack[i + j] == needle[j]) j++;
            if (j == needle.Length) return i;
        }
        return -1;
    }
}
