/* The C API as the CCairn module sees it. */
#include <cairn/cairn.h>
