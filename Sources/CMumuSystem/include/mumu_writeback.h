#ifndef MUMU_WRITEBACK_H
#define MUMU_WRITEBACK_H
/* Starts the kernel writing a file's dirty pages in [offset, offset + length) to disk without waiting for it
 * (length 0: to the end of the file). Linux: sync_file_range(SYNC_FILE_RANGE_WRITE); it is a hint, not a
 * durability barrier (metadata and the disk's cache still need fsync). Returns 0, or -1 with errno (ENOSYS where
 * the system has no such call). */
int mumu_start_writeback(int fd, long long offset, long long length);

#endif
