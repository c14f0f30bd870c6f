/*
 * TEST HARNESS ONLY. bcryptprimitives.dll for Wine 8.0, which lacks it (WINE-FACTS §7): Rust's
 * std (1.78 and later) imports ProcessPrng from it on Windows. ProcessPrng(PBYTE, SIZE_T) fills
 * the buffer with random bytes and always returns TRUE (learn.microsoft.com,
 * "ProcessPrng function"). This one uses advapi32's RtlGenRandom (SystemFunction036).
 */
#include <stddef.h>
__declspec(dllimport) unsigned char __stdcall SystemFunction036(void *buffer, unsigned long len);

__declspec(dllexport) int __stdcall ProcessPrng(unsigned char *data, size_t len)
{
    while (len > 0) {
        unsigned long n = len > 0x40000000u ? 0x40000000u : (unsigned long)len;
        SystemFunction036(data, n);
        data += n;
        len -= n;
    }
    return 1;
}
