// Raw access to the memory of CPU tensors, for the managed kernels that work on weights and caches in place.
// TorchSharp 0.107 exposes no data pointer (its TensorAccessor copies or indexes element by element); LibTorchSharp's
// own export THSTensor_data returns tensor.data_ptr(), storage offset included.
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace RlhfStudio.Engine.Runtime;

internal static unsafe class NativeTensors
{
    [DllImport("LibTorchSharp")]
    private static extern IntPtr THSTensor_data(IntPtr tensor);

    /// <summary>The first element of <paramref name="tensor"/>, which must be a contiguous CPU tensor of
    /// <paramref name="dtype"/>. Valid while the tensor lives and is not resized.</summary>
    public static void* Data(Tensor tensor, ScalarType dtype)
    {
        var data = FirstElement(tensor, dtype);
        if (!tensor.is_contiguous()) throw new ArgumentException("expected a contiguous tensor");
        return data;
    }

    /// <summary>The first element of a CPU tensor of <paramref name="dtype"/> whose last dimension is contiguous (a
    /// view: narrowed, transposed in its leading dimensions); address elements with <c>tensor.stride()</c>.</summary>
    public static void* StridedData(Tensor tensor, ScalarType dtype)
    {
        var data = FirstElement(tensor, dtype);
        if (tensor.ndim == 0 || tensor.stride(-1) != 1) throw new ArgumentException("expected a tensor whose last dimension is contiguous");
        return data;
    }

    private static void* FirstElement(Tensor tensor, ScalarType dtype)
    {
        if (tensor.device_type != DeviceType.CPU) throw new ArgumentException($"expected a CPU tensor, got one on {tensor.device}");
        if (tensor.dtype != dtype) throw new ArgumentException($"expected a {dtype} tensor, got {tensor.dtype}");
        var data = THSTensor_data(tensor.Handle);
        if (data == IntPtr.Zero) throw new InvalidOperationException("tensor has no storage");
        return (void*)data;
    }
}
