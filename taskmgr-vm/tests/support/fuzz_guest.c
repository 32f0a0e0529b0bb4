/* The system-call fuzzing guest: reads records (number and six arguments) from cases.bin and
   makes each call. Shared by tests/fuzz.rs and the cargo-fuzz target tests/fuzz (vm_syscalls). */
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>
static unsigned char buffer[1 << 16];
int main(void) {
    int fd = open("cases.bin", O_RDONLY);
    int noise = open("noise.bin", O_RDONLY);
    read(noise, buffer, sizeof buffer);
    close(noise);
    static unsigned long record[7];
    long done = 0;
    while (read(fd, record, sizeof record) == sizeof record) {
        long a[6];
        for (int i = 0; i < 6; i++) {
            unsigned long v = record[i + 1];
            /* 0xB0B0 in the top half: a pointer into the buffer, at the low bits' offset. */
            if ((v >> 48) == 0xB0B0) v = (unsigned long)(buffer + (v & 0xfff0));
            a[i] = (long)v;
        }
        syscall(record[0], a[0], a[1], a[2], a[3], a[4], a[5]);
        done++;
    }
    write(1, "done\n", 5);
    return 0;
}
