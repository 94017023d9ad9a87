/* Test scaffolding for running outpost.exe under Wine 8 only (real Windows has this DLL):
 * Rust's standard library imports ProcessPrng from bcryptprimitives.dll, which Wine 8.0 lacks
 * (rust-lang/rust#121337). This stand-in fills the buffer with advapi32's RtlGenRandom
 * (SystemFunction036). Build: x86_64-w64-mingw32-gcc -shared -O2 -o bcryptprimitives.dll
 * bcryptprimitives.c, then put it in the Wine prefix's system32 (or beside the .exe). */
#include <windows.h>
typedef BOOLEAN (WINAPI *RtlGenRandomFn)(PVOID, ULONG);
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    static RtlGenRandomFn gen = NULL;
    if (!gen) gen = (RtlGenRandomFn)GetProcAddress(LoadLibraryA("advapi32.dll"), "SystemFunction036");
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!gen || !gen(data, chunk)) return FALSE;
        data += chunk; len -= chunk;
    }
    return TRUE;
}
