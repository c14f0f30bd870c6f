/*
 * Kernel declarations that khttp.sys uses and mingw-w64's DDK headers lack (Linux build only;
 * driver/linux/build.sh includes this after mingw's ntstrsafe.h). Each signature is the one
 * documented on Microsoft Learn:
 *   ExAllocatePool2             wdm.h   (Windows 10 2004):  learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exallocatepool2
 *   KeQueryInterruptTimePrecise wdm.h   (Windows 10):       .../ddi/wdm/nf-wdm-kequeryinterrupttimeprecise
 *   KeQuerySystemTimePrecise    wdm.h   (Windows 8):        .../ddi/wdm/nf-wdm-kequerysystemtimeprecise
 * POOL_FLAGS is a 64-bit flag word (wdm.h). The POOL_FLAG_* values are not defined here:
 * wdk-sys defines them itself, and a second definition would make its re-exports ambiguous.
 */
#ifndef KHTTP_KCOMPAT_H
#define KHTTP_KCOMPAT_H

typedef ULONG64 POOL_FLAGS;

NTKERNELAPI PVOID NTAPI ExAllocatePool2(POOL_FLAGS Flags, SIZE_T NumberOfBytes, ULONG Tag);
NTKERNELAPI ULONG64 NTAPI KeQueryInterruptTimePrecise(PULONG64 QpcTimeStamp);
NTKERNELAPI VOID NTAPI KeQuerySystemTimePrecise(PLARGE_INTEGER CurrentTime);

#endif /* KHTTP_KCOMPAT_H */
